from uncerda_core.cli import main

raise SystemExit(main())
