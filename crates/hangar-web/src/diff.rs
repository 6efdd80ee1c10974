//! A unified diff (as `git diff` writes it) parsed into files and hunks, and rendered as
//! a file tree with per-file unified and side-by-side views.
