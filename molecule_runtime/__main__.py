from molecule_runtime.cli import main

raise SystemExit(main())
