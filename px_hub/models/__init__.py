from .cifar import CifarResNet, CifarVGG, TinyImageNetResNet18  # noqa: F401  (registers the timm entry points)
