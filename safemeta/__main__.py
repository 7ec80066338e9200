from safemeta.cli import main

raise SystemExit(main())
