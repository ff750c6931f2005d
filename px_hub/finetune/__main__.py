"""``accelerate launch -m px_hub.finetune --recipe NAME [--ticket DIR | --model NAME --mask FILE] [key=value ...]``
(the same options as ``px-hub finetune``)."""
import sys

from px_hub.cli.finetune import main

if __name__ == "__main__":
    sys.exit(main())
