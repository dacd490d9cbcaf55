from inferno.cli import main

main()
