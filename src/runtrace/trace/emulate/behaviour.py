"""What a program did to the emulated machine, summed up the way an analyst reads a sandbox report.

Speakeasy's handlers already record, per run, the files and registry keys a program touched, its
network activity and what it did to processes; runtrace adds the mutexes it created or opened and the
strings it passed to APIs, from the recorded calls.  Each list is capped and de-duplicated in first-seen
order, so a program that writes one file a million times sums up in one line.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_ITEMS = 64  # per kind
MIN_STRING = 4  # shorter string arguments ("r", "rb") say little
_MUTEX_APIS = ("createmutex", "openmutex")


def summarise(runs: Iterable, api_calls: Iterable[tuple]) -> dict:
    """`runs` are Speakeasy's runs; `api_calls` the emulator's (position, name, return, supported,
    args, result) records.  Returns a dict of lists (only the kinds that occurred)."""
    kinds: dict[str, _Capped] = {
        k: _Capped() for k in ("files", "registry", "network", "processes", "mutexes", "strings")
    }
    for run in runs:
        for event in run.file_access:
            kinds["files"].add({"event": event.get("event", ""), "path": str(event.get("path", ""))})
        for event in run.registry_access:
            item = {"event": event.get("event", ""), "key": str(event.get("path", ""))}
            if event.get("value_name"):
                item["value"] = str(event["value_name"])
            kinds["registry"].add(item)
        for query in run.network.get("dns", []):
            kinds["network"].add({"event": "dns", "host": str(query.get("query", ""))})
        for conn in run.network.get("traffic", []):
            kinds["network"].add(
                {
                    "event": str(conn.get("type", "connect")),
                    "host": str(conn.get("server", "")),
                    "port": conn["port"] if isinstance(conn.get("port"), int) else str(conn.get("port", "")),
                    "protocol": str(conn.get("proto", "")),
                }
            )
        for event in run.process_events:
            item = {"event": str(event.get("event", "")), "path": str(event.get("path", ""))}
            if event.get("cmdline"):
                item["command_line"] = str(event["cmdline"])
            kinds["processes"].add(item)
    for _position, name, _ret, _supported, args, _result in api_calls:
        strings = [a for a in args if isinstance(a, str) and not a.startswith("<")]
        if name.lower().split(".", 1)[-1].startswith(_MUTEX_APIS):
            for s in strings:
                kinds["mutexes"].add(s)
        for s in strings:
            if len(s) >= MIN_STRING and s.isprintable():
                kinds["strings"].add(s)
    return {k: v.items for k, v in kinds.items() if v.items}


class _Capped:
    def __init__(self) -> None:
        self.items: list = []
        self._seen: set = set()

    def add(self, item) -> None:
        key = repr(item)
        if key in self._seen or len(self.items) >= MAX_ITEMS:
            return
        self._seen.add(key)
        self.items.append(item)


def merged(summaries: Iterable[dict]) -> dict:
    """The summaries of the processes of one run as one (each kind in first-seen order, capped)."""
    kinds: dict[str, _Capped] = {}
    for summary in summaries:
        for kind, items in summary.items():
            capped = kinds.setdefault(kind, _Capped())
            for item in items:
                capped.add(item)
    return {k: v.items for k, v in kinds.items()}
