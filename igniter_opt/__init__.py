"""igniter-opt: interference-aware GPU provisioning for DNN inference serving."""

__version__ = "0.1.0"
