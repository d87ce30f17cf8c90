"""``depthcube download`` (issue 14 item 1) against servers on 127.0.0.1 only: a loopback HTTP
server serving an EN4 yearly zip made of the demo's EN4 files and an Argo GDAC (profile index and
the real ``13857_prof.nc``), and a fake ``copernicusmarine`` module that records each request and
writes a small file shaped like the toolbox's subset output. No test reaches the internet: every
socket connection is checked to go to loopback."""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import socket
import sys
import threading
import types
import zipfile
from pathlib import Path

import netCDF4
import numpy as np
import pytest

from depthcube.cli import main
from cube.constants import GLORYS_DEPTHS
from cube.download import DownloadError, download, dry_run, load_request
from cube.download import en4 as en4_source
from cube.errors import ConfigError
from cube.readers import detect_product, open_product

REGION_13 = (40.0, 53.0, -30.0, -17.0)


# --------------------------------------------------------------------------------------------
# Loopback only
# --------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Every name looked up and every connection made by a test here must be loopback; any other
    fails the test (even where the code under test swallows the error)."""
    offending = []
    real_connect = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            offending.append(host)
            raise OSError(f"test tried to reach {host}")
        return real_connect(self, address)

    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in (None, "127.0.0.1", "::1", "localhost"):
            offending.append(name)
            raise socket.gaierror(f"test tried to resolve {name}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield
    assert not offending, f"tests must not leave loopback: {offending}"


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def http_root(tmp_path):
    """(folder served, base URL, list of request paths): a bounded stdlib server on 127.0.0.1."""
    root = tmp_path / "server"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    server.requests = []
    server.timeout = 10
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}", server.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _request(tmp_path, **kw):
    data = {"output": str(tmp_path / "real"), "region": list(REGION_13), "start": "2010-01-01", "end": "2010-01-03"}
    data.update(kw)
    return load_request(data)


# --------------------------------------------------------------------------------------------
# The request and the plan
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    ({"region": [53, 40, -30, -17]}, "download: region: need -90 <= lat_min < lat_max <= 90"),
    ({"region": [40, 53, 170, 190]}, "download: region: need -180 <= lon_min < lon_max <= 180"),
    ({"end": "2009-12-31"}, "download: end: 2009-12-31 is before start 2010-01-01"),
    ({"start": "2010-13-01"}, "download: start: expected a date 'YYYY-MM-DD'"),
    ({"products": ["ostia", "sst"]}, "download: products[1]: expected one of ['ostia', 'glorys', 'en4', 'argo']"),
    ({"glorys_step_days": 0}, "download: glorys_step_days: must be >= 1"),
    ({"colour": "blue"}, "download: unknown key(s) ['colour']"),
])
def test_a_bad_request_is_one_error_naming_the_key(tmp_path, change, message):
    with pytest.raises(ConfigError) as e:
        _request(tmp_path, **change)
    assert str(e.value).startswith(message), str(e.value)


def test_dry_run_lists_the_files_and_sizes_from_the_native_grids(tmp_path, capsys):
    out = tmp_path / "real"
    rc = main(["download", str(out), "--region", "40,53,-30,-17", "--start", "2010-01-01", "--end", "2010-12-31",
               "--products", "ostia,glorys", "--dry-run"])
    assert rc == 0 and not out.exists()  # nothing fetched, nothing created
    text = capsys.readouterr().out
    # OSTIA 0.05 deg centres -89.975 + 0.05k: 13 deg / 0.05 = 260 per axis; int16 + byte + byte = 4 B.
    assert "260 x 260 cells of 0.05 deg x 4 B = 270,400 B per day" in text
    assert "ostia: 365 fetch(es), 365 to do, 0 complete; 98.7 MB to fetch" in text  # 365 x 270,400 B
    # GLORYS centres -80 + k/12 and -180 + k/12: k = 1440..1596 and 1800..1956, 157 each (both ends on
    # the grid); 157 x 157 x 50 levels x 2 B; one every 7 days from Jan 1: 53 files.
    assert "157 x 157 cells of 1/12 deg x 50 levels x 2 B = 2,464,900 B per file" in text
    assert "glorys: 53 fetch(es)" in text and "130.6 MB to fetch" in text  # 53 x 2,464,900 B
    assert "fetch ostia/20100101120000-UKMO-L4_GHRSST-SSTfnd-OSTIA-GLOB_REP-v02.0-fv02.0.nc  <- " \
           "METOFFICE-GLO-SST-L4-REP-OBS-SST 2010-01-01" in text
    assert "fetch glorys/cmems_mod_glo_phy_my_0.083deg_P1D-m_thetao_20101231.nc" in text  # day 1 + 52 x 7
    assert "total to fetch: 229.3 MB" in text


def test_dry_run_of_the_globe(tmp_path):
    lines = dry_run(load_request({"output": str(tmp_path), "region": [-90, 90, -180, 180], "start": "2010-01-01",
                                  "end": "2010-12-31", "products": ["ostia", "glorys"], "glorys": "monthly"}))
    # 3600 x 7200 x 4 B x 365 = 37.84 GB; 2041 x 4320 x 50 x 2 B x 12 = 10.58 GB.
    assert lines[0].startswith("ostia: 365 fetch(es), 365 to do, 0 complete; 37.8 GB")
    assert "2041 x 4320 cells" in lines[368] and "glorys: 12 fetch(es)" in lines[367] and "10.6 GB" in lines[367]


def test_en4_zip_urls_follow_the_met_office_layout():
    base = "https://www.metoffice.gov.uk/hadobs/en4/data/en4-2-1"
    assert en4_source.zip_url(base, 2019) == f"{base}/EN.4.2.2/EN.4.2.2.profiles.g10.2019.zip"
    assert en4_source.zip_url(base, 2022) == f"{base}/EN.4.2.2.profiles.g10.2022.zip"


# --------------------------------------------------------------------------------------------
# Copernicus Marine (a fake toolbox)
# --------------------------------------------------------------------------------------------


class FakeCredentialsCannotBeNone(Exception):
    pass


class FakeInvalidUsernameOrPassword(Exception):
    pass


def _axis(ds, name, values, units, axis):
    ds.createDimension(name, len(values))
    v = ds.createVariable(name, "f4", (name,))
    v[:] = values
    v.setncatts({"standard_name": name, "units": units, "axis": axis})


def _time(ds, day: str):
    ds.createDimension("time", 1)
    t = ds.createVariable("time", "f8", ("time",))
    t.setncatts({"standard_name": "time", "units": "seconds since 1970-01-01 00:00:00", "calendar": "gregorian",
                 "axis": "T"})
    t[:] = (np.datetime64(day[:10], "s") - np.datetime64("1970-01-01T00:00:00", "s")).astype(float)


def _grid(first, step, lo, hi):
    k = np.arange(int(np.ceil((lo - first) / step - 1e-9)), int(np.floor((hi - first) / step + 1e-9)) + 1)
    return (first + k * step).astype(np.float32)


def write_subset_like(path: Path, dataset_id: str, kw: dict):
    """What ``copernicusmarine.subset`` writes for one time step: the ARCO names (``latitude``,
    ``longitude``, time at 00:00), the product's packing, a plausible field."""
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.setncatts({"Conventions": "CF-1.8", "title": f"subset of {dataset_id}"})
        _time(ds, kw["start_datetime"])
        if "SST" in dataset_id:
            lat = _grid(-89.975, 0.05, kw["minimum_latitude"], kw["maximum_latitude"])
            lon = _grid(-179.975, 0.05, kw["minimum_longitude"], kw["maximum_longitude"])
            _axis(ds, "latitude", lat, "degrees_north", "Y")
            _axis(ds, "longitude", lon, "degrees_east", "X")
            sst = ds.createVariable("analysed_sst", "i2", ("time", "latitude", "longitude"), fill_value=np.int16(-32768))
            sst.setncatts({"standard_name": "sea_water_temperature", "units": "kelvin", "scale_factor": 0.01,
                           "add_offset": 273.15})
            celsius = 20.0 - 0.5 * (lat[:, None] - 40.0) + 0.0 * lon[None, :]
            sst[0] = celsius + 273.15
            mask = ds.createVariable("mask", "i1", ("time", "latitude", "longitude"))
            mask.setncatts({"flag_masks": np.array([1, 2, 4, 8, 16], np.int8),
                            "flag_meanings": "water land optional_lake_surface sea_ice optional_river_surface"})
            mask[0] = 1
            ice = ds.createVariable("sea_ice_fraction", "i1", ("time", "latitude", "longitude"), fill_value=np.int8(-128))
            ice.setncatts({"units": "1", "scale_factor": 0.01})
            ice[0] = 0
        else:
            lat = _grid(-80.0, 1 / 12, kw["minimum_latitude"], kw["maximum_latitude"])
            lon = _grid(-180.0, 1 / 12, kw["minimum_longitude"], kw["maximum_longitude"])
            ds.createDimension("depth", len(GLORYS_DEPTHS))
            depth = ds.createVariable("depth", "f4", ("depth",))
            depth[:] = GLORYS_DEPTHS
            depth.setncatts({"standard_name": "depth", "units": "m", "positive": "down", "axis": "Z"})
            _axis(ds, "latitude", lat, "degrees_north", "Y")
            _axis(ds, "longitude", lon, "degrees_east", "X")
            thetao = ds.createVariable("thetao", "i2", ("time", "depth", "latitude", "longitude"),
                                       fill_value=np.int16(-32767))
            thetao.setncatts({"standard_name": "sea_water_potential_temperature", "units": "degrees_C",
                              "scale_factor": 0.0007324442, "add_offset": 21.0})
            profile = 2.0 + 16.0 * np.exp(-np.asarray(GLORYS_DEPTHS) / 800.0)
            thetao[0] = np.broadcast_to(profile[:, None, None], (len(GLORYS_DEPTHS), len(lat), len(lon)))


@pytest.fixture
def fake_copernicus(monkeypatch):
    """A ``copernicusmarine`` module: ``subset`` records its arguments and writes a subset-like file.
    ``fake.fail_on`` = an output file name (or "*") makes that call raise ``fake.failure`` instead;
    ``fake.after_write(path)`` alters a written file."""
    fake = types.ModuleType("copernicusmarine")
    fake.calls, fake.fail_on, fake.failure, fake.after_write = [], None, None, None
    fake.credentials_valid, fake.logins = True, []
    fake.CredentialsCannotBeNone = FakeCredentialsCannotBeNone
    fake.InvalidUsernameOrPassword = FakeInvalidUsernameOrPassword

    def subset(**kw):
        fake.calls.append(kw)
        out = Path(kw["output_directory"]) / kw["output_filename"]
        if fake.fail_on in (kw["output_filename"], "*"):
            out.write_bytes(b"CDF\x01 half a file")  # what an interrupted transfer leaves
            raise fake.failure
        write_subset_like(out, kw["dataset_id"], kw)
        if fake.after_write:
            fake.after_write(out)
        return types.SimpleNamespace(file_path=out)

    def login(**kw):
        fake.logins.append(kw)
        return fake.credentials_valid

    fake.subset, fake.login = subset, login
    monkeypatch.setitem(sys.modules, "copernicusmarine", fake)
    return fake


def test_ostia_and_glorys_requests_and_files(tmp_path, fake_copernicus):
    req = _request(tmp_path, products=["ostia", "glorys"], end="2010-01-09")
    report = download(req, progress=False)
    assert report.fetched == {"ostia": 9, "glorys": 2} and report.skipped == {"ostia": 0, "glorys": 0}
    ostia_calls = [c for c in fake_copernicus.calls if c["dataset_id"] == "METOFFICE-GLO-SST-L4-REP-OBS-SST"]
    glorys_calls = [c for c in fake_copernicus.calls if c["dataset_id"] == "cmems_mod_glo_phy_my_0.083deg_P1D-m"]
    assert len(ostia_calls) == 9 and len(glorys_calls) == 2
    first = ostia_calls[0]
    assert first["variables"] == ["analysed_sst", "mask", "sea_ice_fraction"]
    assert (first["minimum_latitude"], first["maximum_latitude"], first["minimum_longitude"],
            first["maximum_longitude"]) == REGION_13
    assert first["start_datetime"] == first["end_datetime"] == "2010-01-01T00:00:00"
    assert first["output_filename"] == "20100101120000-UKMO-L4_GHRSST-SSTfnd-OSTIA-GLOB_REP-v02.0-fv02.0.nc"
    assert Path(first["output_directory"]) == tmp_path / "real" / "ostia" / ".partial"  # never the final name
    assert [c["start_datetime"] for c in glorys_calls] == ["2010-01-01T00:00:00", "2010-01-08T00:00:00"]
    assert glorys_calls[0]["variables"] == ["thetao"] and "minimum_depth" not in glorys_calls[0]  # all 50 levels
    ostia_files = sorted((tmp_path / "real" / "ostia").glob("*.nc"))
    glorys_files = sorted((tmp_path / "real" / "glorys").glob("*.nc"))
    assert [p.name[:8] for p in ostia_files] == [f"201001{d:02d}" for d in range(1, 10)]
    assert [p.name for p in glorys_files] == ["cmems_mod_glo_phy_my_0.083deg_P1D-m_thetao_20100101.nc",
                                              "cmems_mod_glo_phy_my_0.083deg_P1D-m_thetao_20100108.nc"]
    assert not (tmp_path / "real" / "ostia" / ".partial").exists()
    # The readers accept what was downloaded, by name alone, and date it from name and time axis.
    sst = open_product(ostia_files[0])
    assert detect_product(ostia_files[0]) == "ostia" and sst.sizes["lat"] == 260 and sst.sizes["lon"] == 260
    np.testing.assert_allclose(float(sst["analysed_sst"].max()), 20.0 + 273.15, atol=0.011)
    thetao = open_product(glorys_files[1])
    assert detect_product(glorys_files[1]) == "glorys" and str(thetao["time"].values[0])[:10] == "2010-01-08"
    np.testing.assert_allclose(thetao["thetao"].values[0, :, 0, 0], 2.0 + 16.0 * np.exp(-GLORYS_DEPTHS / 800.0),
                               atol=0.001)


def test_glorys_monthly_and_ostia_nrt_names(tmp_path, fake_copernicus):
    req = _request(tmp_path, products=["ostia", "glorys"], start="2010-01-31", end="2010-02-01", glorys="monthly",
                   ostia="nrt")
    download(req, progress=False)
    assert {c["dataset_id"] for c in fake_copernicus.calls} == {"METOFFICE-GLO-SST-L4-NRT-OBS-SST-V2",
                                                                 "cmems_mod_glo_phy_my_0.083deg_P1M-m"}
    monthly = sorted((tmp_path / "real" / "glorys").glob("*.nc"))
    assert [p.name for p in monthly] == ["cmems_mod_glo_phy_my_0.083deg_P1M-m_thetao_201001.nc",
                                         "cmems_mod_glo_phy_my_0.083deg_P1M-m_thetao_201002.nc"]
    # A monthly mean is dated mid-month by the reader.
    assert str(open_product(monthly[1])["time"].values[0])[:10] == "2010-02-15"
    nrt = sorted((tmp_path / "real" / "ostia").glob("*.nc"))
    assert nrt[0].name == "20100131120000-UKMO-L4_GHRSST-SSTfnd-OSTIA-GLOB-v02.0-fv02.0.nc"
    assert open_product(nrt[0])["analysed_sst"].shape == (1, 260, 260)


def test_an_interrupted_download_resumes_without_refetching(tmp_path, fake_copernicus):
    req = _request(tmp_path, products=["ostia"], end="2010-01-05")
    fake_copernicus.fail_on = "20100103120000-UKMO-L4_GHRSST-SSTfnd-OSTIA-GLOB_REP-v02.0-fv02.0.nc"
    fake_copernicus.failure = ConnectionResetError("connection reset by peer")
    with pytest.raises(DownloadError, match="20100103.*failed .ConnectionResetError: connection reset"):
        download(req, progress=False)
    folder = tmp_path / "real" / "ostia"
    assert [p.name[:8] for p in sorted(folder.glob("*.nc"))] == ["20100101", "20100102"]  # whole files only
    assert not (folder / ".partial").exists()  # the half file was ours: removed
    fake_copernicus.fail_on, fake_copernicus.calls = None, []
    report = download(req, progress=False)
    assert report.fetched == {"ostia": 3} and report.skipped == {"ostia": 2}
    assert [c["start_datetime"][:10] for c in fake_copernicus.calls] == ["2010-01-03", "2010-01-04", "2010-01-05"]
    fake_copernicus.calls, fake_copernicus.logins = [], []
    assert download(req, progress=False).fetched == {"ostia": 0} and fake_copernicus.calls == []
    assert fake_copernicus.logins == []  # nothing to fetch: no credentials needed


def test_a_file_the_reader_rejects_is_not_kept(tmp_path, fake_copernicus):
    def wrong_units(path):
        with netCDF4.Dataset(path, "a") as ds:
            ds["analysed_sst"].units = "degC"

    fake_copernicus.after_write = wrong_units
    with pytest.raises(DownloadError, match="20100101.*the downloaded ostia file is not usable: bad_units"):
        download(_request(tmp_path, products=["ostia"], end="2010-01-01"), progress=False)
    assert not list((tmp_path / "real" / "ostia").rglob("*.nc"))


@pytest.mark.parametrize("how", ["checked before", FakeCredentialsCannotBeNone("no credentials"),
                                 FakeInvalidUsernameOrPassword("bad password")])
def test_missing_credentials_are_one_line_and_exit_2(tmp_path, fake_copernicus, capsys, how):
    if how == "checked before":  # what login(check_credentials_valid=True) says without credentials
        fake_copernicus.credentials_valid = False
    else:  # the toolbox refusing a request all the same
        fake_copernicus.fail_on, fake_copernicus.failure = "*", how
    rc = main(["download", str(tmp_path / "real"), "--region", "40,53,-30,-17", "--start", "2010-01-01",
               "--end", "2010-01-02", "--products", "ostia", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("depthcube download: error: no valid Copernicus Marine credentials: run "
                          "`copernicusmarine login`")
    assert not list((tmp_path / "real").rglob("*.nc"))
    assert fake_copernicus.logins == [{"check_credentials_valid": True}]
    assert fake_copernicus.calls == ([] if how == "checked before" else fake_copernicus.calls[:1])


def test_missing_package_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "copernicusmarine", None)  # import copernicusmarine -> ImportError
    rc = main(["download", str(tmp_path / "real"), "--region", "40,53,-30,-17", "--start", "2010-01-01",
               "--end", "2010-01-01", "--products", "glorys"])
    err = capsys.readouterr().err
    assert rc == 2 and err == ("depthcube download: error: the copernicusmarine package is not installed: "
                               "pip install 'depthcube[download]' (or pip install copernicusmarine)\n")


# --------------------------------------------------------------------------------------------
# EN4 (loopback HTTP)
# --------------------------------------------------------------------------------------------


def _serve_en4_zip(root: Path, demo_en4: Path, year: int = 2010) -> list[Path]:
    months = sorted(demo_en4.glob(f"EN.4.2.2.f.profiles.g10.{year}??.nc"))
    folder = root / "EN.4.2.2"
    folder.mkdir(exist_ok=True)
    with zipfile.ZipFile(folder / f"EN.4.2.2.profiles.g10.{year}.zip", "w", zipfile.ZIP_DEFLATED) as z:
        for m in months:
            z.write(m, arcname=m.name)
    return months


def test_en4_yearly_zip_is_unpacked_into_the_monthly_files(tmp_path, tiny_demo, http_root):
    root, base, requests = http_root
    months = _serve_en4_zip(root, tiny_demo / "en4")
    assert [m.name[-9:-3] for m in months] == ["201001", "201002"]
    req = _request(tmp_path, products=["en4"], start="2010-01-27", end="2010-02-05", en4_url=base)
    assert dry_run(req)[0].startswith("en4: 1 fetch(es), 1 to do, 0 complete; ")
    size = (root / "EN.4.2.2" / "EN.4.2.2.profiles.g10.2010.zip").stat().st_size
    assert f"({size / 1e3:.1f} kB)" in dry_run(req)[2]  # the size the server reports
    requests.clear()
    report = download(req, progress=False)
    assert report.fetched == {"en4": 1} and requests == ["/EN.4.2.2/EN.4.2.2.profiles.g10.2010.zip"]
    folder = tmp_path / "real" / "en4"
    assert sorted(p.name for p in folder.iterdir()) == [m.name for m in months]  # no zip, no .partial left
    for m in months:
        assert (folder / m.name).read_bytes() == m.read_bytes()
        table = open_product(folder / m.name)
        assert detect_product(folder / m.name) == "en4" and len(table.lat) > 0
    requests.clear()
    assert download(req, progress=False).fetched == {"en4": 0} and requests == []  # complete: no request


def test_en4_month_missing_from_the_zip_is_one_error(tmp_path, tiny_demo, http_root):
    root, base, _ = http_root
    _serve_en4_zip(root, tiny_demo / "en4")
    req = _request(tmp_path, products=["en4"], start="2010-02-01", end="2010-03-31", en4_url=base)
    with pytest.raises(DownloadError, match=r"EN.4.2.2.profiles.g10.2010.zip: the zip has no "
                                            r"EN.4.2.2.f.profiles.g10.201003.nc"):
        download(req, progress=False)
    assert not list((tmp_path / "real" / "en4").glob("*.zip")) and not (tmp_path / "real" / "en4" / ".partial").exists()


def test_en4_server_error_names_the_url(tmp_path, http_root, capsys):
    _, base, _ = http_root
    rc = main(["download", str(tmp_path / "real"), "--region", "40,53,-30,-17", "--start", "2022-01-01",
               "--end", "2022-01-31", "--products", "en4", "--en4-url", base, "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and err == f"depthcube download: error: {base}/EN.4.2.2.profiles.g10.2022.zip: not found on the server\n"


# --------------------------------------------------------------------------------------------
# Argo GDAC (loopback HTTP)
# --------------------------------------------------------------------------------------------

INDEX_HEADER = """# Title : Profile directory file of the Argo Global Data Assembly Center
# Description : The directory file describes all individual profile files of the argo GDAC ftp site.
# Project : ARGO
# Format version : 2.0
# Date of update : 20240101000000
# FTP root number 1 : ftp://ftp.ifremer.fr/ifremer/argo/dac
# FTP root number 2 : ftp://usgodae.org/pub/outgoing/argo/dac
# GDAC node : CORIOLIS
file,date,latitude,longitude,ocean,profiler_type,institution,date_update
"""


def _serve_gdac(root: Path, real_data: Path) -> list[str]:
    """An index whose 13857 rows come from the real file's own JULD and positions, plus 5900446."""
    with netCDF4.Dataset(real_data / "13857_prof.nc") as ds:
        juld = np.asarray(ds["JULD"][:], float)
        lat, lon = np.asarray(ds["LATITUDE"][:], float), np.asarray(ds["LONGITUDE"][:], float)
        cycles = np.asarray(ds["CYCLE_NUMBER"][:], int)
    when = np.datetime64("1950-01-01T00:00:00", "s") + (juld * 86400).astype("timedelta64[s]")
    rows = [f"aoml/13857/profiles/R13857_{c:03d}.nc,{str(t).replace('-', '').replace('T', '').replace(':', '')},"
            f"{la:.3f},{lo:.3f},A,845,AO,20181011180520" for c, t, la, lo in zip(cycles, when, lat, lon)]
    rows.append("aoml/5900446/profiles/D5900446_001.nc,20040430042300,-34.500,-45.200,A,845,AO,20181011180520")
    rows.append("aoml/5900446/profiles/D5900446_002.nc,,,,A,845,AO,20181011180520")  # unknown date/position
    with gzip.open(root / "ar_index_global_prof.txt.gz", "wt") as f:
        f.write(INDEX_HEADER + "\n".join(rows) + "\n")
    (root / "dac" / "aoml" / "13857").mkdir(parents=True)
    shutil.copy(real_data / "13857_prof.nc", root / "dac" / "aoml" / "13857" / "13857_prof.nc")
    return rows


def test_argo_by_region_and_time_from_the_gdac_index(tmp_path, real_data, http_root):
    root, base, requests = http_root
    rows = _serve_gdac(root, real_data)
    in_1998 = [r for r in rows if r.split(",")[1][:4] == "1998"]
    assert in_1998  # the real float reported in 1998
    req = _request(tmp_path, products=["argo"], region=[-90, 90, -180, 180], start="1998-01-01", end="1998-12-31",
                   argo_gdac=base)
    assert "argo: 1 fetch(es)" in dry_run(req)[0] and requests == []  # dry run: nothing fetched, not even the index
    report = download(req, progress=False)
    assert report.fetched == {"argo": 2}  # the index, then the one float
    assert requests == ["/ar_index_global_prof.txt.gz", "/dac/aoml/13857/13857_prof.nc"]
    prof = tmp_path / "real" / "argo" / "13857_prof.nc"
    assert prof.read_bytes() == (real_data / "13857_prof.nc").read_bytes()
    assert detect_product(prof) == "argo" and len(open_product(prof).lat) > 0
    plan_lines = dry_run(req)
    assert f"{len(in_1998)} profile(s) selected" in "\n".join(plan_lines)
    assert plan_lines[0].startswith("argo: 2 fetch(es), 0 to do, 2 complete")
    requests.clear()
    assert download(req, progress=False).fetched == {"argo": 0} and requests == []


def test_argo_region_outside_every_profile_fetches_only_the_index(tmp_path, real_data, http_root):
    root, base, requests = http_root
    _serve_gdac(root, real_data)
    req = _request(tmp_path, products=["argo"], region=[60, 70, 100, 110], start="1998-01-01", end="1998-12-31",
                   argo_gdac=base)
    assert download(req, progress=False).fetched == {"argo": 1}
    assert requests == ["/ar_index_global_prof.txt.gz"]


def test_argo_by_float_and_a_float_missing_on_the_server(tmp_path, real_data, http_root, capsys):
    root, base, requests = http_root
    _serve_gdac(root, real_data)
    args = ["download", str(tmp_path / "real"), "--region", "40,53,-30,-17", "--start", "2010-01-01",
            "--end", "2010-01-02", "--products", "argo", "--argo-gdac", base, "-q"]
    assert main(args + ["--argo-floats", "13857"]) == 0  # by float: region and span do not filter
    assert (tmp_path / "real" / "argo" / "13857_prof.nc").is_file()
    capsys.readouterr()
    assert main(args + ["--argo-floats", "5900446"]) == 2
    err = capsys.readouterr().err
    assert err == f"depthcube download: error: {base}/dac/aoml/5900446/5900446_prof.nc: not found on the server\n"
    assert not (tmp_path / "real" / "argo" / ".partial").exists()


def test_a_server_page_instead_of_the_index_is_an_error(tmp_path, http_root):
    root, base, _ = http_root
    (root / "ar_index_global_prof.txt.gz").write_bytes(b"<html>maintenance</html>")
    req = _request(tmp_path, products=["argo"], argo_gdac=base)
    with pytest.raises(DownloadError, match="not an Argo profile index"):
        download(req, progress=False)
    assert not (tmp_path / "real" / "argo" / "ar_index_global_prof.txt.gz").exists()


# --------------------------------------------------------------------------------------------
# The whole command
# --------------------------------------------------------------------------------------------


def test_download_writes_a_cube_config_for_what_it_fetched(tmp_path, tiny_demo, real_data, http_root,
                                                           fake_copernicus, capsys):
    from cube.inputs import expand_inputs
    from cube.config import load_cube_config

    root, base, _ = http_root
    _serve_en4_zip(root, tiny_demo / "en4")
    _serve_gdac(root, real_data)
    out = tmp_path / "real"
    rc = main(["download", str(out), "--region", "40,53,-30,-17", "--start", "2010-01-27", "--end", "2010-02-05",
               "--en4-url", base, "--argo-gdac", base])
    assert rc == 0
    text = capsys.readouterr()
    assert "ostia      10 fetched,     0 already complete" in text.out
    assert f"wrote {out / 'cube.yaml'}; build with: depthcube build {out / 'cube.yaml'}" in text.out
    assert "download ostia: 10/10 files in" in text.err  # not a terminal: one line per product
    cfg = load_cube_config(out / "cube.yaml")
    assert cfg.grid.region == REGION_13 and (cfg.time.start, cfg.time.end) == ("2010-01-27", "2010-02-05")
    found = {p: sorted(Path(f.url).name for f in expand_inputs(cfg) if f.product == p) for p in ("ostia", "glorys", "en4", "argo")}
    assert len(found["ostia"]) == 10 and len(found["glorys"]) == 2 and len(found["en4"]) == 2 and found["argo"] == []
    (out / "cube.yaml").write_text("# mine\n")
    assert main(["download", str(out), "--region", "40,53,-30,-17", "--start", "2010-01-27", "--end", "2010-02-05",
                 "--en4-url", base, "--argo-gdac", base, "-q"]) == 0
    assert (out / "cube.yaml").read_text() == "# mine\n"  # never replaced


def test_downloaded_files_build_a_cube(tmp_path, fake_copernicus):
    """The files and the cube.yaml a download leaves are what ``depthcube build`` reads: no reject,
    and the cube holds the served fields (area means of a field linear in latitude are exact)."""
    import xarray as xr

    from cube.build import build
    from cube.config import load_cube_config

    req = _request(tmp_path, products=["ostia", "glorys"], end="2010-01-16")
    download(req, progress=False)
    cfg = load_cube_config(tmp_path / "real" / "cube.yaml")
    report = build(cfg, progress=False)
    assert report.status == "built" and report.rejects == []
    tree = xr.open_datatree(cfg.output, engine="zarr")
    sst = tree["ostia/analysed_sst"]
    assert sst.shape == (16, 130, 130)  # 13 deg at 0.1 deg, 16 days
    row = sst.isel(time=5).sel(lat=45.05, method="nearest")
    np.testing.assert_allclose(row.values - 273.15, 20.0 - 0.5 * (45.05 - 40.0), atol=0.01)
    thetao = tree["glorys/thetao"]
    assert [str(t)[:10] for t in thetao["time"].values] == ["2010-01-01", "2010-01-08", "2010-01-15"]
    np.testing.assert_allclose(thetao.isel(time=1, lat=60, lon=60).values,
                               2.0 + 16.0 * np.exp(-GLORYS_DEPTHS / 800.0), atol=0.002)
