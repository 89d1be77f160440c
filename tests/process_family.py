"""Finding every process a test started, even after its parent died and it was reparented."""
import psutil

MARK = "PROCESS_FAMILY_MARK"


def marked(marker: str) -> list[psutil.Process]:
    """Live processes (zombies hold nothing) whose environment carries MARK=marker."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.environ().get(MARK) == marker:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
