"""The ``gamornet`` command line: one module per subcommand, each parsing options, calling the library
and printing. No library module imports anything from here.
"""
