from kernels_check.cli import main

raise SystemExit(main())
