from tfinpaint.cli import main

main()
