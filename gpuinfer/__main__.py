"""``python -m gpuinfer`` behaves exactly like the installed ``gpuinfer`` command."""
from gpuinfer.cli.main import main

raise SystemExit(main())
