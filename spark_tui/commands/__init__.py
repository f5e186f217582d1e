"""One module per subcommand: `add_parser(parser)` and `run(args) -> int`. Keep module-level imports light."""
