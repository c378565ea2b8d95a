"""The worked example in docs/adding_a_method.md must run as written."""
import re
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parents[1] / "docs" / "adding_a_method.md"


def test_worked_example_runs_and_plugin_stacks(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 3, "the doc has a definition block, a usage block and the AlignmentMethod block"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    exec(compile(blocks[1], str(DOC), "exec"), namespace)
    res = namespace["results"]
    assert res["status"] == "ok" and res["method"] == "minent_example"
    header = (tmp_path / "runs/example/minent/train_log.csv").read_text().splitlines()[0]
    assert {"loss/cls", "loss/entropy", "loss/l2sp"} <= set(header.split(","))
    # the L2-SP plugin is zero at the anchor and positive once weights move
    from dacl.methods.base import Batch, Experience, StepState

    method = namespace["MinEnt"]()
    method.setup(torch.nn.Linear(3, 2), 2)
    plugin = namespace["L2SP"](weight=1.0)
    method.add_plugin(plugin)
    plugin.before_experience(Experience())
    state = StepState(0, 1, Batch(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long)))
    plugin.before_backward(state)
    assert state.losses["l2sp"].item() == 0.0
    with torch.no_grad():
        method.model.weight.add_(0.5)
    plugin.before_backward(state)
    assert abs(state.losses["l2sp"].item() - 6 * 0.25) < 1e-6


def test_alignment_method_example_defines_a_working_discrepancy():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    namespace: dict = {}
    exec(compile("from dacl.registry import METHODS\n" + blocks[2], str(DOC), "exec"), namespace)
    from dacl.methods.da.common import DomainOutputs
    from dacl.registry import METHODS

    method = METHODS.build("mean_match_example")
    f = torch.randn(8, 4)
    same = DomainOutputs(torch.zeros(8, 2), torch.zeros(8, 2), f, f.clone())
    shifted = DomainOutputs(torch.zeros(8, 2), torch.zeros(8, 2), f, f + 1.0)
    assert method.alignment_loss(same, None).item() == 0.0
    assert abs(method.alignment_loss(shifted, None).item() - 4.0) < 1e-5


def test_every_paper_results_table_says_how_each_row_was_made():
    """A number in paper_results/ must come with the command that produced it: every CSV has a command column,
    filled on every row."""
    import csv
    from pathlib import Path

    tables = sorted((Path(__file__).resolve().parents[1] / "paper_results").rglob("*.csv"))
    assert tables
    for path in tables:
        with path.open() as f:
            rows = list(csv.DictReader(f))
        assert rows and "command" in rows[0], f"{path} has no command column"
        assert all(r["command"].strip() for r in rows), f"{path} has rows without a command"
