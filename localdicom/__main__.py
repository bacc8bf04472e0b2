from localdicom.cli import main

main()
