"""EN4.2.2 monthly profile files from the Met Office Hadley Centre, over HTTPS with fsspec.

EN4 is published as one zip per year holding the twelve monthly files
``EN.4.2.2.f.profiles.g10.YYYYMM.nc``. The yearly zips of 1900-2020 sit under
``<base>/EN.4.2.2/EN.4.2.2.profiles.g10.YYYY.zip`` and those from 2021 on directly under
``<base>/EN.4.2.2.profiles.g10.YYYY.zip`` (``<base>`` =
https://www.metoffice.gov.uk/hadobs/en4/data/en4-2-1; the Met Office download list and other
clients use this split). EN4 files are global: the whole zip is fetched whatever the region
(the build keeps the profiles inside its grid).

Each year is one fetch: the zip goes to ``en4/.partial/``, the months of the request are
unpacked (zip CRCs checked) to partial names and renamed into ``en4/``, then the zip is deleted.
A year is complete when all its requested months are in ``en4/``. The size of a zip is only known
from the server: ``--dry-run`` asks it (HTTP HEAD) and says "size unknown" when it cannot.
"""

from __future__ import annotations

import re
import zipfile

import fsspec

from .files import DownloadError, discard, fetch_url, partial_path, publish
from .plan import Fetch, ProductPlan
from .request import DownloadRequest

#: Years published under the ``EN.4.2.2/`` sub-folder; later years sit in the base folder.
LAST_YEAR_IN_SUBFOLDER = 2020


def zip_name(year: int) -> str:
    return f"EN.4.2.2.profiles.g10.{year}.zip"


def month_name(year: int, month: int) -> str:
    return f"EN.4.2.2.f.profiles.g10.{year}{month:02d}.nc"


def zip_url(base: str, year: int) -> str:
    folder = f"{base.rstrip('/')}/EN.4.2.2" if year <= LAST_YEAR_IN_SUBFOLDER else base.rstrip("/")
    return f"{folder}/{zip_name(year)}"


def plan_en4(req: DownloadRequest, ask_sizes: bool = False) -> ProductPlan:
    months_by_year: dict[int, list[int]] = {}
    for m in req.months:
        year, month = int(str(m)[:4]), int(str(m)[5:7])
        months_by_year.setdefault(year, []).append(month)
    fetches = []
    for year, months in months_by_year.items():
        url = zip_url(req.en4_url, year)
        targets = tuple(req.folder("en4") / month_name(year, m) for m in months)
        fetches.append(Fetch("en4", targets, url, _remote_size(url) if ask_sizes else None,
                             lambda url=url, year=year, targets=targets: _fetch_year(url, year, targets)))
    return ProductPlan("en4", tuple(fetches), "EN4 yearly zips are global; their sizes come from the server")


def _remote_size(url: str) -> int | None:
    try:
        fs, path = fsspec.core.url_to_fs(url)
        size = fs.info(path).get("size")
        return int(size) if size else None
    except Exception:  # offline or no Content-Length: the plan says 'size unknown'
        return None


def _fetch_year(url: str, year: int, targets: tuple) -> None:
    zip_path = fetch_url(url, targets[0].parent / zip_name(year))
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = {m.rsplit("/", 1)[-1]: m for m in archive.namelist() if re.search(r"\.nc$", m)}
            missing = [t.name for t in targets if t.name not in members]
            if missing:
                raise DownloadError(f"{url}: the zip has no {', '.join(missing)} (it holds "
                                    f"{len(members)} monthly file(s))")
            for target in targets:
                if not target.is_file():
                    _unpack(archive, members[target.name], target)
    except zipfile.BadZipFile as e:
        raise DownloadError(f"{url}: not a valid zip archive ({e})") from None
    finally:
        discard(zip_path)


def _unpack(archive: zipfile.ZipFile, member: str, target) -> None:
    partial = partial_path(target)
    try:
        with archive.open(member) as src, open(partial, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    except (zipfile.BadZipFile, OSError) as e:  # a CRC mismatch is BadZipFile
        discard(partial)
        raise DownloadError(f"{target.name}: damaged in the zip ({e})") from None
    publish(partial, target)

