from dacl.cli import main

main()
