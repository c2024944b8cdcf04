from pratico_daemon.cli import main

raise SystemExit(main())
