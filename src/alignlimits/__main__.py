from alignlimits.cli import main

main()
