from mesh.cli.app import main

main()
