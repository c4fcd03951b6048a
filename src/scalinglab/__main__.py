from scalinglab.cli.main import main

raise SystemExit(main())
