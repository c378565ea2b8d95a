"""Backbones (registered in ``BACKBONES``), the classifier wrapper, discriminator and GRL."""
from dacl.models.backbones import DigitsCNN32, LeNet
from dacl.models.classifier import Classifier, DomainDiscriminator, build_classifier
from dacl.models.grl import grl_coefficient, reverse_gradient

__all__ = ["LeNet", "DigitsCNN32", "Classifier", "DomainDiscriminator", "build_classifier",
           "grl_coefficient", "reverse_gradient"]
