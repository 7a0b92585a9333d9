from adaptok_cli.main import main

main()
