"""``accelerate launch -m px_hub.finetune --recipe NAME [--ticket DIR | --model NAME --mask FILE] [key=value ...]``
is ``px-hub finetune`` with the same options. This file is a program entry point, not library code: it hands the
command line to the px-hub CLI by module name, so no module of the library imports ``px_hub.cli``."""
import runpy
import sys

if __name__ == "__main__":
    sys.argv[1:1] = ["finetune"]
    runpy.run_module("px_hub.cli.main", run_name="__main__", alter_sys=True)
