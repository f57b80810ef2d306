from backfill.cli.main import main

main()
