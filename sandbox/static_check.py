"""The static check a training script passes before it runs: an AST allow-list, with beginner messages.

It is a filter for the obvious (a beginner's `import os`, an LLM's `torch.load`), not the security
boundary: the sandboxed child process is. Every finding names the line, so that the editor can point
at it and a beginner can act on it. The same check runs on code written by the LLM before it is
shown (designs.codegen) and on every script before it is launched (sandbox.runner).

The rules follow docs/contracts.md section 1: imports only torch (nn, nn.functional, optim,
optim.lr_scheduler), math, buildx_runtime and __future__; builtins from a short allow-list; no
dunder or private attribute access; none of torch's file, pickle, hub, extension or private APIs.
The names that lead to those (FORBIDDEN_MODULE_ATTRIBUTES: load, hub, os, torch...) are refused
after any value, not only after an imported module: the check sees names, not values, and a module
kept in a variable (`G = torch.nn.functional`) would otherwise reach them unseen.
"""

from __future__ import annotations

import ast
import builtins
import string
from dataclasses import dataclass
from pathlib import Path

from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

MAX_CODE_BYTES = 200_000  # a generated script is a few kilobytes; this is far above any real one

ALLOWED_MODULES = {
    "__future__",
    "math",
    "torch",
    "torch.nn",
    "torch.nn.functional",
    "torch.optim",
    "torch.optim.lr_scheduler",
    "buildx_runtime",
}

RUNTIME_FILE = Path(__file__).resolve().parent / "engine" / "buildx_runtime.py"


def runtime_names(path: Path = RUNTIME_FILE) -> frozenset[str]:
    """The runtime's public names: its `__all__`, read from the source (importing it would import torch)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__all__" for target in node.targets
        ):
            return frozenset(ast.literal_eval(node.value))
    raise RuntimeError(
        f"{path} has no __all__: the static check cannot tell which of its names a script may use"
    )


# The runtime's public names (docs/contracts.md section 2); nothing else of the module is reachable.
RUNTIME_NAMES = runtime_names()

SAFE_BUILTINS = {
    "abs",
    "all",
    "any",
    "bool",
    "classmethod",
    "dict",
    "divmod",
    "enumerate",
    "filter",
    "float",
    "frozenset",
    "int",
    "isinstance",
    "issubclass",
    "iter",
    "len",
    "list",
    "map",
    "max",
    "min",
    "next",
    "pow",
    "print",
    "property",
    "range",
    "repr",
    "reversed",
    "round",
    "set",
    "slice",
    "sorted",
    "staticmethod",
    "str",
    "sum",
    "super",
    "tuple",
    "zip",
    "True",
    "False",
    "None",
    "object",
    "NotImplemented",
    "Ellipsis",
    # Exceptions a script may raise or catch.
    "Exception",
    "ArithmeticError",
    "AssertionError",
    "IndexError",
    "KeyError",
    "NotImplementedError",
    "RuntimeError",
    "StopIteration",
    "TypeError",
    "ValueError",
    "ZeroDivisionError",
}

# Builtins that reach the interpreter's internals, files or other code: named in their own message.
DANGEROUS_BUILTINS = {
    "eval",
    "exec",
    "compile",
    "open",
    "getattr",
    "setattr",
    "delattr",
    "hasattr",
    "globals",
    "locals",
    "vars",
    "dir",
    "type",
    "__import__",
    "__builtins__",
    "__loader__",
    "__spec__",
    "breakpoint",
    "input",
    "help",
    "memoryview",
    "exit",
    "quit",
}

# Names that, anywhere in an attribute path on a module (torch.load, F.torch.load, rt.os.system),
# lead to files, pickles, downloaded code, native extensions or other processes.
FORBIDDEN_MODULE_ATTRIBUTES = {
    "load": gettext_noop("torch.load unpickles files, which can run any code"),
    "save": gettext_noop("torch.save writes pickles; checkpoints go through rt.save_checkpoint"),
    "hub": gettext_noop("torch.hub downloads and runs code from the internet"),
    "utils": gettext_noop(
        "torch.utils (cpp_extension, data loaders, model zoo) is not available in a script"
    ),
    "cpp_extension": gettext_noop("native extensions are not allowed"),
    "ops": gettext_noop("torch.ops can load native libraries"),
    "load_library": gettext_noop("native libraries are not allowed"),
    "classes": gettext_noop("torch.classes can load native code"),
    "library": gettext_noop("torch.library registers native operators"),
    "package": gettext_noop("torch.package unpickles files"),
    "serialization": gettext_noop("torch.serialization reads and writes pickles"),
    "jit": gettext_noop("torch.jit can load compiled files"),
    "multiprocessing": gettext_noop("scripts run in one process"),
    "distributed": gettext_noop("scripts run in one process"),
    "from_file": gettext_noop("reading files directly is not allowed"),
    "ctypeslib": gettext_noop("numpy.ctypeslib loads native libraries"),
    "ctypes": gettext_noop("ctypes calls native code"),
    "os": gettext_noop("the os module reaches files and processes"),
    "sys": gettext_noop("the sys module reaches the interpreter"),
    "subprocess": gettext_noop("starting programs is not allowed"),
    "builtins": gettext_noop("the builtins module is not available"),
    "importlib": gettext_noop("importing by name is not allowed"),
    "torch": gettext_noop("use torch directly, not through another module"),
    "math": gettext_noop("use math directly, not through another module"),
}

# Attributes that reach frames, code objects and native memory without any dunder: refused anywhere.
# `(x for x in ()).gi_frame.f_globals["__builtins__"]` is the classic walk.
FORBIDDEN_ATTRIBUTES = {
    "gi_frame",
    "gi_code",
    "ag_frame",
    "ag_code",
    "cr_frame",
    "cr_code",
    "f_globals",
    "f_locals",
    "f_builtins",
    "f_back",
    "f_code",
    "tb_frame",
    "tb_next",
    "co_code",
    "mro",
    "ctypes",
    "ctypeslib",
    "cpp_extension",
    "load_library",
    "from_file",
}

# Dunder method names a class may define; others (__getattr__, __reduce__, __del__...) change how
# objects behave behind the reader's back.
ALLOWED_DUNDER_DEFS = {"__init__", "__len__", "__repr__", "__str__", "__iter__", "__getitem__"}


@dataclass(frozen=True)
class Finding:
    line: int
    col: int
    code: str  # "syntax", "too_long", "import", "name", "attribute", "dunder", "format", "definition"
    message: str  # one sentence for a beginner, starting with "Line N:"

    def as_dict(self) -> dict:
        return {"line": self.line, "col": self.col, "code": self.code, "message": self.message}


def check_script(code: str) -> list[Finding]:
    """Check a script's source; an empty list means it may run. Findings are sorted by line."""
    if len(code.encode("utf-8", errors="replace")) > MAX_CODE_BYTES:
        return [
            Finding(
                1,
                0,
                "too_long",
                _("Line 1: the script is longer than %(limit)d bytes; a training script is much shorter.")
                % {"limit": MAX_CODE_BYTES},
            )
        ]
    try:
        tree = ast.parse(code)
    except SyntaxError as error:
        line = error.lineno or 1
        return [
            Finding(
                line,
                (error.offset or 1) - 1,
                "syntax",
                _("Line %(line)d: Python cannot read this line (%(reason)s).")
                % {"line": line, "reason": error.msg},
            )
        ]
    except (RecursionError, MemoryError, ValueError):
        return [Finding(1, 0, "syntax", _("Line 1: the script is nested too deeply for Python to read."))]
    checker = _Checker()
    try:
        checker.visit(tree)
    except RecursionError:
        checker.add(tree, "syntax", _("the script is nested too deeply to check."))
    return sorted(checker.findings, key=lambda finding: (finding.line, finding.col))


def format_findings(findings: list[Finding]) -> str:
    return "\n".join(finding.message for finding in findings)


def _attribute_chain(node: ast.Attribute) -> tuple[ast.AST, list[ast.Attribute]]:
    """The chain a.b.c as (its root `a`, [Attribute b, Attribute c]); the root may be any expression."""
    segments: list[ast.Attribute] = []
    root: ast.AST = node
    while isinstance(root, ast.Attribute):
        segments.append(root)
        root = root.value
    return root, list(reversed(segments))


def _shown(node: ast.AST, limit: int = 60) -> str:
    """The code of `node` as a beginner wrote it, shortened from the left to fit a message."""
    text = ast.unparse(node)
    return text if len(text) <= limit else "..." + text[-(limit - 3) :]


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__") and len(name) > 4


class _Checker(ast.NodeVisitor):
    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.modules: dict[str, str] = {}  # local name -> module path, from the imports
        self.seen: set[tuple[int, int, str]] = set()

    def add(self, node: ast.AST, code: str, text: str) -> None:
        line = getattr(node, "lineno", 1)
        col = getattr(node, "col_offset", 0)
        if (line, col, code) in self.seen:
            return
        self.seen.add((line, col, code))
        self.findings.append(
            Finding(line, col, code, _("Line %(line)d: %(text)s") % {"line": line, "text": text})
        )

    # --- Imports ------------------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name not in ALLOWED_MODULES:
                self._bad_import(node, alias.name)
                continue
            if alias.asname:
                self.modules[alias.asname] = alias.name
            else:
                root = alias.name.split(".")[0]
                self.modules[root] = root

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level or module not in ALLOWED_MODULES:
            self._bad_import(node, "." * node.level + module)
            return
        for alias in node.names:
            local = alias.asname or alias.name
            full = f"{module}.{alias.name}"
            if alias.name == "*":
                self.add(
                    node,
                    "import",
                    _("'from %(module)s import *' hides where names come from; import the module.")
                    % {"module": module},
                )
            elif module == "__future__":
                if alias.name != "annotations":
                    self.add(node, "import", _("only 'from __future__ import annotations' is allowed."))
            elif full in ALLOWED_MODULES:
                self.modules[local] = full
            elif module == "buildx_runtime" and alias.name not in RUNTIME_NAMES:
                self.add(node, "import", _("buildx_runtime has no '%(name)s'.") % {"name": alias.name})
            else:
                self._check_segment(node, alias.name, full)

    def _bad_import(self, node: ast.AST, module: str) -> None:
        self.add(
            node,
            "import",
            _(
                "importing '%(module)s' is not allowed. A training script may import only torch "
                "(with torch.nn, torch.nn.functional, torch.optim), math and buildx_runtime."
            )
            % {"module": module},
        )

    # --- Names --------------------------------------------------------------------------------

    def visit_Name(self, node: ast.Name) -> None:
        name = node.id
        if name == "__name__" and isinstance(node.ctx, ast.Load):
            return  # `if __name__ == "__main__":`
        if name in DANGEROUS_BUILTINS or _is_dunder(name):
            self.add(
                node,
                "name",
                _(
                    "'%(name)s' is not allowed in a training script (it reaches files, other code or Python's internals)."
                )
                % {"name": name},
            )
        elif hasattr(builtins, name) and name not in SAFE_BUILTINS:
            self.add(
                node,
                "name",
                _("the built-in '%(name)s' is not available in a training script.") % {"name": name},
            )
        elif name in self.modules:
            # A module may only start an attribute path (`torch.nn`): passed around as a value it
            # would hide which of its parts the script reaches.
            self.add(
                node,
                "name",
                _("use '%(name)s' only as '%(name)s.something', not as a value of its own.") % {"name": name},
            )

    def visit_Attribute(self, node: ast.Attribute) -> None:
        # The chain first: "'torch.ops' is not allowed" says more than the last attribute.
        self._check_chain(node)
        self._check_attribute(node)
        # Walk down the chain without re-checking its module path at every level.
        self._visit_chain_base(node.value)

    def _check_attribute(self, node: ast.Attribute) -> None:
        attr = node.attr
        if _is_dunder(attr):
            if not (attr == "__init__" and _is_super_call(node.value)):
                self.add(
                    node,
                    "dunder",
                    _("'.%(attr)s' reaches Python's internals and is not allowed.") % {"attr": attr},
                )
        elif attr.startswith("_") and not (isinstance(node.value, ast.Name) and node.value.id == "self"):
            self.add(node, "attribute", _("'.%(attr)s' is private; use the public API.") % {"attr": attr})
        elif attr in FORBIDDEN_ATTRIBUTES:
            self.add(
                node,
                "attribute",
                _("'.%(attr)s' reaches Python's internals or native code and is not allowed.")
                % {"attr": attr},
            )
        elif attr in {"format", "format_map"}:
            self._check_format(node)

    def _visit_chain_base(self, node: ast.AST) -> None:
        if isinstance(node, ast.Attribute):
            self._check_attribute(node)
            self._visit_chain_base(node.value)
        elif isinstance(node, ast.Name):
            if node.id in self.modules:
                return  # the root of a module path: `torch` in `torch.nn`
            self.visit_Name(node)
        else:
            self.visit(node)

    def _check_chain(self, node: ast.Attribute) -> None:
        # Every segment of every chain, whatever its root: `G = torch.nn.functional` then
        # `G.torch.os` must be refused as `F.torch.os` is, and so must `f().torch`, `[F][0].torch`
        # and `self.m.torch`. Only a chain rooted at an imported module can name its full path.
        root, segments = _attribute_chain(node)
        module = self.modules.get(root.id) if isinstance(root, ast.Name) else None
        if module is None:
            for segment in segments:
                if not self._check_value_segment(segment):
                    return
            return
        path = module
        for segment in segments:
            path = f"{path}.{segment.attr}"
            if module == "buildx_runtime" and segment is segments[0] and segment.attr not in RUNTIME_NAMES:
                self.add(
                    segment, "attribute", _("buildx_runtime has no '%(name)s'.") % {"name": segment.attr}
                )
                return
            if not self._check_segment(segment, segment.attr, path):
                return

    def _check_value_segment(self, segment: ast.Attribute) -> bool:
        """A segment after a root that is not an imported module (a variable, a call, an item)."""
        if segment.attr in FORBIDDEN_ATTRIBUTES:
            return False  # refused on its own, with its own message (_check_attribute)
        reason = FORBIDDEN_MODULE_ATTRIBUTES.get(segment.attr)
        if reason is None:
            return True
        self.add(
            segment,
            "attribute",
            _(
                "'%(code)s' is not allowed: %(reason)s. The name '.%(attr)s' is refused after any value; "
                "if it is one of your own, choose another."
            )
            % {"code": _shown(segment), "reason": _(reason), "attr": segment.attr},
        )
        return False

    def _check_segment(self, node: ast.AST, name: str, path: str) -> bool:
        reason = FORBIDDEN_MODULE_ATTRIBUTES.get(name)
        if reason is None and name.startswith("_"):
            reason = _("private parts of a library are not available")
        if reason is None:
            return True
        self.add(
            node,
            "attribute",
            _("'%(path)s' is not allowed: %(reason)s.") % {"path": path, "reason": _(reason)},
        )
        return False

    def _check_format(self, node: ast.Attribute) -> None:
        # "{0.__class__}".format(x) walks attributes without naming them in the code.
        if not (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            self.add(
                node,
                "format",
                _("'.%(attr)s' is only allowed on a string written in the code; use an f-string.")
                % {"attr": node.attr},
            )
            return
        try:
            fields = [
                field for _text, field, _spec, _conv in string.Formatter().parse(node.value.value) if field
            ]
        except ValueError:
            return  # Python raises the same error at run time
        if any("." in field or "[" in field for field in fields):
            self.add(
                node,
                "format",
                _(
                    "a format string may not look up attributes or items ('{x.y}', '{x[0]}'); use an f-string."
                ),
            )

    def visit_Subscript(self, node: ast.Subscript) -> None:
        # f_globals["__builtins__"], vars(x)["__dict__"]: a dunder name as a key is never needed.
        key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str) and _is_dunder(key.value):
            self.add(
                node,
                "dunder",
                _("the key '%(key)s' reaches Python's internals and is not allowed.") % {"key": key.value},
            )
        self.generic_visit(node)

    def visit_MatchClass(self, node: ast.MatchClass) -> None:
        # `case object(torch=t):` reads the matched value's attribute `torch` as `value.torch` does,
        # without an attribute in the tree: the same names are refused here.
        for name in node.kwd_attrs:
            reason = FORBIDDEN_MODULE_ATTRIBUTES.get(name)
            if name.startswith("_") or name in FORBIDDEN_ATTRIBUTES:
                reason = gettext_noop("it reaches Python's internals, private parts or native code")
            if reason is not None:
                self.add(
                    node,
                    "attribute",
                    _("'%(name)s=' in a case pattern reads '.%(name)s', which is not allowed: %(reason)s.")
                    % {"name": name, "reason": _(reason)},
                )
        self.generic_visit(node)

    # --- Definitions --------------------------------------------------------------------------

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if _is_dunder(node.name) and node.name not in ALLOWED_DUNDER_DEFS:
            self.add(node, "definition", _("defining '%(name)s' is not allowed.") % {"name": node.name})
        elif node.name in DANGEROUS_BUILTINS or node.name in self.modules:
            self.add(
                node, "definition", _("'%(name)s' is a reserved name; choose another.") % {"name": node.name}
            )
        for arg in [
            *node.args.posonlyargs,
            *node.args.args,
            *node.args.kwonlyargs,
            node.args.vararg,
            node.args.kwarg,
        ]:
            if arg is not None and (arg.arg in DANGEROUS_BUILTINS or _is_dunder(arg.arg)):
                self.add(arg, "name", _("'%(name)s' is a reserved name; choose another.") % {"name": arg.arg})
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        if _is_dunder(node.name) or node.name in DANGEROUS_BUILTINS:
            self.add(
                node, "definition", _("'%(name)s' is a reserved name; choose another.") % {"name": node.name}
            )
        for keyword in node.keywords:
            if keyword.arg == "metaclass":
                self.add(keyword.value, "definition", _("metaclasses are not allowed in a training script."))
        self.generic_visit(node)

    def visit_keyword(self, node: ast.keyword) -> None:
        if node.arg is not None and _is_dunder(node.arg):
            self.add(node.value, "name", _("'%(name)s' is not allowed.") % {"name": node.arg})
        self.generic_visit(node)

    def visit_Global(self, node: ast.Global | ast.Nonlocal) -> None:
        for name in node.names:
            if name in DANGEROUS_BUILTINS or _is_dunder(name):
                self.add(node, "name", _("'%(name)s' is not allowed.") % {"name": name})

    visit_Nonlocal = visit_Global

    def visit_alias(self, node: ast.alias) -> None:
        return  # handled by visit_Import / visit_ImportFrom


def _is_super_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"
