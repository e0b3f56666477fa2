from redbatch.cli import main

main()
