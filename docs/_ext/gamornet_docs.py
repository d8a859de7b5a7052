"""Sphinx directives that write parts of the GaMorNet pages from the code itself.

``.. gamornet-cli-help::``
    The ``--help`` text of the ``gamornet`` command and of each of its
    subcommands, taken from :func:`gamornet.cli.main.build_parser` at build time, so
    the page lists exactly the subcommands that are installed.

``.. gamornet-published-models::``
    A table of the published models, read from :mod:`gamornet.models`.

``.. gamornet-published-files::``
    A table of the published data files (tutorial data, prediction tables).
"""

import argparse
import os

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

#: Help texts are wrapped at this width, whatever the terminal that builds the docs.
_HELP_WIDTH = "88"


def _subcommands(parser):
    """(name, parser) of each subcommand of ``parser``, in the order ``--help`` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices.items())
    return []


def _format_help(parser):
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = _HELP_WIDTH
    try:
        return parser.format_help()
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def _literal(text):
    block = nodes.literal_block(text, text)
    block["language"] = "text"
    return block


class _RstDirective(SphinxDirective):
    """A directive that writes reStructuredText and parses it in place."""

    has_content = False

    def rst_lines(self):
        """The reStructuredText this directive stands for, as a list of lines."""
        raise NotImplementedError

    def run(self):
        container = nodes.container()
        source = self.get_source_info()[0]
        lines = StringList()
        for number, line in enumerate(self.rst_lines()):
            lines.append(line, source, number)
        self.state.nested_parse(lines, self.content_offset, container)
        return container.children


class CliHelp(SphinxDirective):
    """The ``--help`` of ``gamornet`` and of every subcommand, one section each."""

    has_content = False

    def run(self):
        from gamornet.cli.main import build_parser

        parser = build_parser()
        result = [_literal(_format_help(parser))]
        for name, subparser in _subcommands(parser):
            section_id = nodes.make_id(f"gamornet-{name}")
            section = nodes.section(ids=[section_id], names=[f"gamornet {name}"])
            section += nodes.title(text=f"gamornet {name}")
            section += _literal(_format_help(subparser))
            self.state.document.note_implicit_target(section, section)
            result.append(section)
        return result


def _table(header, rows, widths):
    lines = [".. list-table::", "   :header-rows: 1", f"   :widths: {' '.join(map(str, widths))}", ""]
    for row in [header] + rows:
        lines.append(f"   * - {row[0]}")
        lines.extend(f"     - {cell}" for cell in row[1:])
    return lines


class PublishedModels(_RstDirective):
    """The registry's published models: name, backend, input shape, files, description."""

    def rst_lines(self):
        from gamornet import models

        rows = []
        for entry in models.PUBLISHED_MODELS:
            files = " ".join(f"``{path}``" for path in entry.files)
            shape = "(" + ", ".join(map(str, entry.input_shape)) + ")"
            rows.append([f"``{entry.name}``", entry.backend, shape, entry.description, files])
        return _table(["name", "backend", "input shape", "what it is", "files (under the base URL)"],
                      rows, [12, 8, 10, 30, 40])


class PublishedFiles(_RstDirective):
    """The registry's published data files: name, path, description."""

    def rst_lines(self):
        from gamornet import models

        rows = [[f"``{entry.name}``", f"``{entry.path}``", entry.description]
                for entry in models.PUBLISHED_FILES]
        return _table(["name", "file (under the base URL)", "what it is"], rows, [20, 50, 30])


def setup(app):
    app.add_directive("gamornet-cli-help", CliHelp)
    app.add_directive("gamornet-published-models", PublishedModels)
    app.add_directive("gamornet-published-files", PublishedFiles)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
