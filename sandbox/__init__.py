"""Running code nobody reviewed: the bottom layer, which imports no app.

Designs (code checks), training (runs, trusted evaluations) and predictions use it through these
names only (docs/contracts.md, section 3):

- `sandbox.runner.run_script(...) -> SandboxResult`: one script in a new box, supervised to its end;
- `sandbox.checks.run_check(...)`, `sandbox.checks.prepare()`: code checks in boxes started ahead;
- `sandbox.upload_check.check_upload(...) -> UploadCheck`: an uploaded zip checked and decoded in a box of
  its own, its answer and tensors checked again on this side;
- `sandbox.text_check.check_text(...) -> TextCheck`: an uploaded text tokenised in a box of its own, its
  tokens and tokenizer checked again here against the text, the cache built here;
- `sandbox.files.open_regular(folder, name, max_bytes=...)`: a file the child left, read safely;
- `sandbox.static_check.check_script(code)`: the AST allow-list (a filter, not the boundary);
- `sandbox.launcher.host()`: what isolation this worker gives (for /readyz);
- `sandbox.events`: what a child may say, and the limits on it;
- `sandbox.engine`: the torch-only code that runs inside (harness, buildx_runtime, datasets, custom).
"""
