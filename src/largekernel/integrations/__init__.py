"""Bridges to the libraries people already use: timm's registry, segmentation_models_pytorch, MONAI.

Each bridge is opt-in and imports its library only when called:

* :func:`largekernel.integrations.timm.register_with_timm` -- every largekernel model becomes
  buildable with ``timm.create_model`` (and so with smp's ``"tu-<name>"`` encoders);
* :mod:`largekernel.integrations.monai` -- a largekernel backbone as a MONAI ``FlexibleUNet`` encoder.
"""
