from scalinglab.cli import main

raise SystemExit(main())
