from synthllm.cli import main

# vLLM starts its engine processes with spawn, which re-imports this module: guard it.
if __name__ == "__main__":
    main()
