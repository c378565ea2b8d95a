"""CL plugins: EWC penalty, LwF distillation, reservoir replay buffer."""
import pytest
import torch
from torch import nn

from dacl.methods.base import Batch, Experience, StepState
from dacl.methods.cl.lwf import distillation_loss
from dacl.methods.cl.memory import ReservoirBuffer
from dacl.registry import METHODS, PLUGINS


def _method_with(plugin_name, **kw):
    method = METHODS.build("source_only")
    method.setup(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), 3)
    plugin = PLUGINS.build(plugin_name, **kw)
    method.add_plugin(plugin)
    return method, plugin


def _data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


@pytest.mark.parametrize("online", [False, True])
def test_ewc_penalty_is_zero_at_the_anchor_and_grows_with_fisher_weighted_distance(online):
    method, ewc = _method_with("ewc", weight=2.0, online=online)
    ewc.after_experience(Experience(0, data=_data()))
    assert ewc.penalty().item() == 0.0
    fisher = {n[len("importance_"):]: f for n, f in ewc.named_buffers() if n.startswith("importance_")}
    assert all((f >= 0).all() for f in fisher.values()) and sum(f.sum() for f in fisher.values()) > 0
    with torch.no_grad():
        method.model[0].weight.add_(0.1)
    small = ewc.penalty().item()
    expected = 0.5 * 2.0 * (fisher["0__weight"] * 0.01).sum().item()
    assert small == pytest.approx(expected, rel=1e-5)
    with torch.no_grad():
        method.model[0].weight.add_(0.1)
    assert ewc.penalty().item() == pytest.approx(4 * small, rel=1e-5)


def test_online_ewc_keeps_one_running_fisher():
    method, ewc = _method_with("ewc", online=True, gamma=0.5)
    ewc.after_experience(Experience(0, data=_data(seed=0)))
    first = ewc.get_buffer("importance_0__weight").clone()
    ewc.after_experience(Experience(1, data=_data(seed=0)))
    assert torch.allclose(ewc.get_buffer("importance_0__weight"), 1.5 * first, rtol=1e-4)
    assert sum(n.startswith("importance_") for n, _ in ewc.named_buffers()) == 4  # one per parameter, not per task


def test_offline_ewc_merged_penalty_equals_the_sum_of_per_task_penalties():
    """Two anchors folded into one quadratic: value and gradient must equal sum_k F_k (theta - theta_k)^2."""
    method, ewc = _method_with("ewc", weight=3.0)
    params = dict(method.model.named_parameters())
    anchors, fishers = [], []
    for k in range(2):
        with torch.no_grad():
            for p in params.values():
                p.add_(0.3 * torch.randn_like(p))
        ewc.after_experience(Experience(k, data=_data(seed=k)))
        anchors.append({n: p.detach().clone() for n, p in params.items()})
        fishers.append(ewc.fisher_diagonal(*_data(seed=k)))
    with torch.no_grad():
        for p in params.values():
            p.add_(0.2 * torch.randn_like(p))
    reference = 0.5 * 3.0 * sum((fishers[k][n] * (p - anchors[k][n]).pow(2)).sum() for k in range(2) for n, p in params.items())
    merged = ewc.penalty()
    assert merged.item() == pytest.approx(reference.item(), rel=1e-4)
    g_ref = torch.autograd.grad(reference, list(params.values()))
    g_merged = torch.autograd.grad(merged, list(params.values()))
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(g_ref, g_merged))


@pytest.mark.parametrize("path", ["linear", "vmap"])
def test_fisher_is_the_mean_of_per_example_squared_gradients(path):
    """Both estimators (the all-Linear matmul shortcut and the vmap fallback) against the one-by-one definition."""
    method, ewc = _method_with("ewc", fisher_samples=10_000)
    if path == "vmap":  # a LayerNorm owns parameters, so the Linear shortcut does not apply
        method.model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 3))
    x, y = _data(40)
    fisher = ewc.fisher_diagonal(x, y)
    model = method.model
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(x)):  # the slow definition, one example at a time
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        for n, p in model.named_parameters():
            expected[n] += p.grad.pow(2) / len(x)
    assert all(torch.allclose(fisher[n], expected[n], rtol=1e-4, atol=1e-8) for n in expected)


def test_lwf_2019_loss_is_the_class_average_of_the_summed_form():
    """van de Ven & Tolias' code averaged the distillation over classes until 26f00db: 1/C of the summed form,
    the same minimiser and a C-times weaker gradient (what the lwf_2019 strategy declares)."""
    torch.manual_seed(0)
    student, teacher = torch.randn(16, 10, requires_grad=True), torch.randn(16, 10)
    summed, averaged = distillation_loss(student, teacher, 2.0), distillation_loss(student, teacher, 2.0, class_mean=True)
    assert averaged.item() == pytest.approx(summed.item() / 10, rel=1e-6)
    g_sum, = torch.autograd.grad(summed, student)
    g_mean, = torch.autograd.grad(averaged, student)
    assert torch.allclose(g_mean * 10, g_sum, atol=1e-6)
    # the definition matches their pre-fix code: -(targets * log_scores) averaged over every element, T^2-scaled,
    # up to the teacher entropy (a constant in the student)
    t_soft, log_s = torch.softmax(teacher / 2, 1), torch.log_softmax(student.detach() / 2, 1)
    theirs = 4 * (-(t_soft * log_s)).mean() - 4 * (-(t_soft * t_soft.log())).mean()
    assert float(averaged) == pytest.approx(float(theirs), rel=1e-5)


def test_lwf_is_zero_when_student_equals_teacher_and_positive_otherwise():
    logits = torch.randn(16, 5)
    assert distillation_loss(logits, logits.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(logits, torch.randn(16, 5), 2.0).item() > 0.01
    with pytest.raises(ValueError, match="fewer than the teacher"):
        distillation_loss(logits[:, :3], logits, 2.0)
    method, lwf = _method_with("lwf")
    lwf.before_experience(Experience(1))
    state = StepState(0, 1, Batch(*_data(32)))
    method.training_step(state)
    lwf.before_backward(state)
    assert state.losses["lwf"].item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():  # the student drifts from the frozen teacher: the penalty must notice
        method.model[2].weight[0].add_(0.5)  # one class row (a uniform shift would leave the softmax unchanged)
    state = StepState(1, 2, Batch(*_data(32)))
    method.training_step(state)
    lwf.before_backward(state)
    assert state.losses["lwf"].item() > 1e-3


def test_reservoir_never_exceeds_capacity_and_keeps_a_uniform_sample():
    counts = torch.zeros(1000)
    for trial in range(200):
        buf = ReservoirBuffer(capacity=100, seed=trial)
        for start in range(0, 1000, 64):
            ids = torch.arange(start, min(start + 64, 1000))
            buf.add(ids.float().unsqueeze(1), ids)
            assert int(buf.size) <= 100
        assert int(buf.size) == 100 and len(set(buf.y.tolist())) == 100, "no duplicates"
        counts[buf.y] += 1
    # each of 1,000 items should be kept with probability 0.1: 20 of 200 trials on average
    early, late = counts[:500].mean().item(), counts[500:].mean().item()
    assert abs(early - 20) < 1.5 and abs(late - 20) < 1.5, (early, late)
    chi2 = (((counts.view(10, 100).sum(1) - 2000) ** 2) / 2000).sum().item()
    assert chi2 < 27.9, f"per-decile counts not uniform (chi2={chi2:.1f}, 9 dof, p=0.001)"


def test_replay_plugin_adds_a_loss_once_the_buffer_has_data():
    method, replay = _method_with("replay", memory_size=50, batch_size=16)
    x, y = _data(32)
    state = StepState(0, 1, Batch(x, y))
    method.training_step(state)
    replay.before_backward(state)
    assert "replay" not in state.losses
    replay.after_update(state)
    state2 = StepState(1, 2, Batch(x, y))
    method.training_step(state2)
    replay.before_backward(state2)
    assert state2.losses["replay"].item() > 0 and int(replay.buffer.size) == 32


def test_class_balanced_buffer_splits_memory_equally_over_seen_classes():
    from dacl.methods.cl.memory import ClassBalancedBuffer

    buf = ClassBalancedBuffer(capacity=120, seed=0)
    for cls_pair in ((0, 1), (2, 3), (4, 5)):  # classes arrive task by task, 500 examples each
        for start in range(0, 1000, 100):
            y = torch.tensor(cls_pair).repeat_interleave(50).repeat(1)
            x = (torch.arange(100) + start).float().unsqueeze(1)
            buf.add(x, y)
            assert int(buf.size) <= 120
        sizes = {int(c): int(b.size) for c, b in buf.groups.items()}
        quota = 120 // len(sizes)
        assert all(s == quota for s in sizes.values()), sizes
    counts = sum(torch.bincount(buf.sample(120)[1], minlength=6) for _ in range(10)).float()
    assert (counts > 140).all() and (counts < 260).all(), f"replay draws must cover every class about equally: {counts.tolist()}"


def test_experience_balanced_replay_fills_at_experience_end_and_never_replays_the_current_task():
    method, replay = _method_with("replay", memory_size=90, batch_size=32, buffer="experience_balanced")
    for index in range(3):
        x, y = torch.randn(200, 4), torch.full((200,), index)  # experience i holds class i only
        replay.before_experience(Experience(index, classes=(index,), data=(x, y)))
        for _ in range(3):
            state = StepState(0, 1, Batch(x[:32], y[:32]))
            method.training_step(state)
            replay.before_backward(state)
            replay.after_update(state)
            if index == 0:
                assert "replay" not in state.losses, "nothing may be replayed before the first experience ends"
            else:
                assert state.losses["replay"].item() > 0
                assert int(replay.buffer.size) == 90 // index * index  # the current batches were not stored
        replay.after_experience(Experience(index, classes=(index,), data=(x, y)))
        sizes = sorted(int(b.size) for b in replay.buffer.groups.values())
        assert sizes == [90 // (index + 1)] * (index + 1), sizes
    stored = torch.cat([b.y[:int(b.size)] for b in replay.buffer.groups.values()])
    assert torch.bincount(stored).tolist() == [30, 30, 30]


def test_lwf_in_task_il_distils_the_old_heads_only():
    from dacl.engine.continual import TaskMask

    method = METHODS.build("source_only")
    method.setup(TaskMask(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))), 4)
    lwf = PLUGINS.build("lwf")
    method.add_plugin(lwf)
    lwf.before_experience(Experience(0, classes=(0, 1), scenario="task"))
    lwf.before_experience(Experience(1, classes=(2, 3), scenario="task"))
    method.model.active = torch.tensor([2, 3])

    def loss():
        state = StepState(0, 1, Batch(*_data(32)))
        method.training_step(state)
        lwf.before_backward(state)
        return state.losses["lwf"].item()

    assert loss() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        method.model.model[2].weight[2:].add_(1.0)  # the new head moves: nothing to distil
    assert loss() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        method.model.model[2].weight[0].add_(0.5)  # an old head moves: penalised
    assert loss() > 1e-3


def _task_il_replay(n_classes: int):
    from dacl.engine.continual import TaskMask

    method = METHODS.build("source_only")
    method.setup(TaskMask(nn.Sequential(nn.Linear(4, n_classes))), n_classes)
    replay = PLUGINS.build("replay", memory_size=10)
    method.add_plugin(replay)
    return method, replay


def test_replay_in_task_il_scores_stored_examples_with_their_own_head():
    method, replay = _task_il_replay(4)
    replay.before_experience(Experience(0, classes=(0, 1), scenario="task"))
    replay.before_experience(Experience(1, classes=(2, 3), scenario="task"))
    method.model.active = torch.tensor([2, 3])
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 3])
    logits = replay.memory_logits(x, y)
    assert torch.isinf(logits[:2, 2:]).all() and torch.isfinite(logits[:2, :2]).all()
    assert torch.isinf(logits[2, :2]).all() and torch.isfinite(logits[2, 2:]).all()


def test_replay_task_il_heads_survive_a_later_task_with_lower_labels():
    """Shuffled Split MNIST (class_order_seed): task 1 may hold smaller digits than task 0; old heads must stay."""
    _, replay = _task_il_replay(10)
    replay.before_experience(Experience(0, classes=(2, 8), scenario="task"))
    replay.before_experience(Experience(1, classes=(4, 1), scenario="task"))
    logits = replay.memory_logits(torch.randn(2, 4), torch.tensor([8, 1]))
    assert torch.isfinite(logits[0, [2, 8]]).all() and torch.isinf(logits[0]).sum() == 8
    assert torch.isfinite(logits[1, [1, 4]]).all() and torch.isinf(logits[1]).sum() == 8


def test_si_importance_follows_the_loss_decrease_and_its_penalty_anchors():
    method, si = _method_with("si", weight=1.0)
    x, y = _data()
    si.before_experience(Experience(0))
    opt = torch.optim.SGD(method.model.parameters(), lr=0.1)
    for step in range(20):
        state = StepState(step, 20, Batch(x, y))
        method.training_step(state)
        opt.zero_grad()
        state.total_loss().backward()
        opt.step()
        si.after_update(state)
    si.after_experience(Experience(0))
    assert all((o >= 0).all() for o in si._omega) and sum(o.sum() for o in si._omega) > 0
    state = StepState(0, 1, Batch(x, y))
    si.before_backward(state)
    assert state.losses["si"].item() == 0.0
    with torch.no_grad():
        method.model[0].weight.add_(0.1)
    state = StepState(0, 1, Batch(x, y))
    si.before_backward(state)
    assert state.losses["si"].item() > 0


def test_agem_projects_conflicting_gradients_onto_the_memory_half_space():
    method, agem = _method_with("agem", per_experience=1, batch_size=1, memory_size=1)  # sampling is then exact
    x, y = _data(64, seed=1)
    agem.after_experience(Experience(0, data=(x, y)))
    params = list(method.model.parameters())
    n = int(agem.buffer.size)
    mx, my = agem.buffer.x[:n], agem.buffer.y[:n]
    for p in params:  # a gradient that directly increases the memory loss
        p.grad = None
    loss = -torch.nn.functional.cross_entropy(method.model(mx), my)
    loss.backward()
    agem.after_backward(StepState(0, 1, Batch(x, y)))
    ref = torch.autograd.grad(torch.nn.functional.cross_entropy(method.model(mx), my), params)
    dot = sum((p.grad * r).sum() for p, r in zip(params, ref)).item()
    assert agem.projections == 1 and dot == pytest.approx(0.0, abs=1e-5)


def test_ewc_direct_gradient_equals_the_autograd_penalty_gradient():
    grads = {}
    for mode in ("autograd", "direct", "task only"):
        torch.manual_seed(0)
        method, ewc = _method_with("ewc", weight=7.0, gradient="direct" if mode == "task only" else mode)
        ewc.after_experience(Experience(0, data=_data()))
        with torch.no_grad():
            for p in method.model.parameters():
                p.add_(0.1)
        state = StepState(0, 1, Batch(*_data(32, seed=3)))
        method.training_step(state)
        if mode != "task only":
            ewc.before_backward(state)
        method.zero_grad()
        state.total_loss().backward()
        if mode != "task only":
            ewc.after_backward(state)
            assert state.losses["ewc"].item() == pytest.approx(ewc.penalty().item(), rel=1e-5)
            assert state.losses["ewc"].item() > 1e-3  # parameters moved away from the anchor: a real penalty
        grads[mode] = [p.grad.clone() for p in method.model.parameters()]
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(grads["autograd"], grads["direct"]))
    assert not all(torch.allclose(a, b) for a, b in zip(grads["direct"], grads["task only"])), "EWC added no gradient"


def test_lwf_zero_padded_targets_push_new_class_probability_down():
    """van de Ven & Tolias' class-IL variant: the teacher says 'none of the new classes', so a student that puts
    mass on a new class pays for it, while old_only ignores new classes entirely."""
    from dacl.engine.continual import TaskMask

    losses = {}
    for targets in ("old_only", "zero_padded"):
        torch.manual_seed(0)
        method = METHODS.build("source_only")
        method.setup(TaskMask(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))), 4)
        lwf = PLUGINS.build("lwf", targets=targets)
        method.add_plugin(lwf)
        lwf.before_experience(Experience(0, classes=(0, 1), scenario="class"))
        lwf.before_experience(Experience(1, classes=(2, 3), scenario="class"))
        method.model.active = torch.tensor([0, 1, 2, 3])
        with torch.no_grad():
            method.model.model[2].bias[2:].add_(5.0)  # the student now favours the new classes
        state = StepState(0, 1, Batch(*_data(32)))
        method.training_step(state)
        lwf.before_backward(state)
        losses[targets] = state.losses["lwf"].item()
    assert losses["old_only"] == pytest.approx(0.0, abs=1e-6) and losses["zero_padded"] > 1.0


def test_lwf_teacher_stays_in_eval_mode_when_the_loop_switches_to_training():
    """The loop calls method.train() after every evaluation; a teacher with dropout must still give fixed targets."""
    from dacl.engine.continual import TaskMask
    from dacl.registry import METHODS, PLUGINS

    torch.manual_seed(0)
    method = METHODS.build("source_only")
    method.setup(TaskMask(nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 4))), 4)
    lwf = PLUGINS.build("lwf")
    method.add_plugin(lwf)
    lwf.before_experience(Experience(1, classes=(2, 3), scenario="class"))
    method.train()
    assert not lwf.teacher.training and method.model.training
    x = torch.randn(8, 4)
    with torch.no_grad():
        assert torch.equal(lwf.teacher(x), lwf.teacher(x)), "dropout reached the teacher"
