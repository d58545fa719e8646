from synthllm.cli import main

main()
