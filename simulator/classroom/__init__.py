"""Classroom labs: one maillab server for a room of students, a live dashboard, server-side grading.

`config` writes and reads a class folder (class.toml, students.csv, handouts/), `tracker` follows
the server's transcripts and attributes sessions to students, `grading` replays them through the
lesson runner, `dashboard` is the instructor's Textual screen, `cli` the `maillab classroom`
subcommands. Nothing here imports Twisted: the server is `maillab serve --classroom DIR`.
"""
