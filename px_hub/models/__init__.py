from .cifar import CifarResNet, CifarVGG, TinyImageNetResNet18  # noqa: F401  (registers the timm entry points)

# The architectures px-hub registers in timm. Stock timm does not know them: their tickets load after
# `import px_hub` (the card shows the px-hub line for them instead of the timm-only snippet).
TIMM_MODELS = ("cifar_resnet20", "cifar_vgg16_bn", "tinyimagenet_resnet18")
