"""One module per `factory` subcommand, each with `add_arguments(parser)` and `main(args)`."""
