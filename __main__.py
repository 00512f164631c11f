from seawatch.cli import main

raise SystemExit(main())
