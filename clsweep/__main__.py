from clsweep.cli import main

raise SystemExit(main())
