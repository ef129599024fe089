"""Registered systems, one file each; see base.py for the contract."""

from toonlab.models.base import Model, Phase, Step, build_model, get_model_class, model_names, register

__all__ = ["Model", "Phase", "Step", "build_model", "get_model_class", "model_names", "register"]
