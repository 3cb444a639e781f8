from narformer_tvm.cli.main import main

main()
