from machine_health.cli import main

main()
