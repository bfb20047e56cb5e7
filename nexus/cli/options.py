"""Argument and option types shared by several commands, defined once."""

from __future__ import annotations

from typing import Annotated

import typer

ModelArg = Annotated[str, typer.Argument(help="Model name: letters, digits, '_', '-', '.'.", show_default=False)]
OptionalModelArg = Annotated[str | None, typer.Argument(help="Only this model.", show_default=False)]
VersionOpt = Annotated[int | None, typer.Option("--version", "-v", help="Version number (default: latest).")]
CommitOpt = Annotated[str | None, typer.Option("--commit", help="Version stored at this commit (4+ hex digits).")]
RepositoryOpt = Annotated[
    str | None,
    typer.Option("--repository", "-r", help="Folder or s3:// / gs:// URI (default: [publish] in .nexusrc)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
GitCommitOpt = Annotated[bool, typer.Option("--commit", help="Commit .nexus_meta.json afterwards.")]
InputsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--input", help="NAME:DTYPE:DIMS (FP32, float32 or torch.float32), dims without the batch (-1: any); repeat."
    ),
]
OutputsOpt = Annotated[list[str] | None, typer.Option("--output", help="NAME:DTYPE:DIMS; repeat per output.")]
SamplesOpt = Annotated[
    list[str] | None,
    typer.Option("--sample", help="NAME=FILE.npy: record the signature from one run on it; repeat per input."),
]
ServerOpt = Annotated[
    str | None,
    typer.Option("--server", help="Triton: HOST:PORT or http(s)://HOST:PORT (default: the running `nexus serve`)."),
]
ProtocolOpt = Annotated[str, typer.Option(help="http or grpc.")]
