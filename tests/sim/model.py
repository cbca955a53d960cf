"""The stand-in's object model: pool, host, SR, VMs, VBDs, VDIs, sessions,
CBT logs, knobs and statistics, and the operations XAPI performs on them.

Thread model.  Many threads use the model: one per XAPI HTTPS connection
(master and slave), one per NBD connection, one per control request, plus
the accept loops.  One threading.Lock, Model.lock, protects *everything* in
here (objects, sessions, CBT logs, knobs, stats).  Every Model method
expects the caller to hold it.  Model.cond is a Condition on that lock,
notified whenever a VBD or VM goes away or a knob changes, so
VDI.data_destroy waits for VBDs to disappear in wait_no_vbds, whose
cond.wait releases the lock while it waits.
Nobody holds the lock across network I/O.  File data: guest writes
(control write/write_file), snapshot copies and data_destroy's rename run
under the lock (the unlink itself runs later, in a thread of its own), so a snapshot is an atomic point in time with respect to
writes and their CBT marks; NBD reads and checksums run without it, on file
descriptors opened under the lock (an unlinked file stays readable).

CBT (docs/xapi.md, "The CBT bitmap" and "Snapshots on the host").  Each
VDI that takes part in CBT is a node of a doubly linked chain: snapshots
carry a closed log (the 64 KiB blocks changed between the previous
snapshot and that one), the live VDI carries the current log and is
always the last node.  A log is a bytearray bitmap
already in wire order (MSB-first: block i is bit 0x80 >> (i & 7) of byte
i >> 3), sized for the VDI's size when the log was opened; older, shorter
logs are zero-extended when combined.
"""

import os
import threading
import time
import uuid as uuidlib

import disk
from wire import DateTime, EPOCH

NULL = "OpaqueRef:NULL"
BLOCK = disk.BLOCK
CLASSES = ("pool", "host", "SR", "VM", "VBD", "VDI", "task")
API_MAJOR, API_MINOR = 2, 21
MAX_VHD_SIZE = 2040 << 30       # xapi Constants.max_vhd_size
VHD_BLOCK = 2 << 20
HOSTNAME = "xs-sim"


class XapiError(Exception):
    """A XAPI failure: DESCRIPTION is [CODE, params...] as sent on the wire."""

    def __init__(self, code, *params):
        super().__init__(code)
        self.description = [code] + [str(p) for p in params]


class ControlError(Exception):
    """A bad control request (HTTP 400)."""


def new_ref():
    return "OpaqueRef:" + str(uuidlib.uuid4())


def new_uuid():
    return str(uuidlib.uuid4())


def bitmap_len(size):
    """Bytes of a CBT bitmap for a disk of SIZE bytes (docs/xapi.md,
    "The CBT bitmap")."""
    return ((size + BLOCK - 1) // BLOCK + 7) // 8


def mark_blocks(log, first, last):
    """Set the bits of blocks [FIRST, LAST) in LOG (MSB-first)."""
    for i in range(first, last):
        log[i >> 3] |= 0x80 >> (i & 7)


def bitmap_or(a, b, n):
    """A | B as N bytes; the shorter one is zero-extended (disk grew)."""
    a = bytes(a[:n]).ljust(n, b"\0")
    b = bytes(b[:n]).ljust(n, b"\0")
    return (int.from_bytes(a, "big") | int.from_bytes(b, "big")).to_bytes(n, "big")


def device_name(userdevice):
    try:
        i = int(userdevice)
    except ValueError:
        return userdevice
    return "xvd" + chr(ord("a") + i) if 0 <= i < 26 else "xvd%d" % i


def now_seconds():
    return int(time.time())


class Obj:
    """One XAPI object: REC holds its public fields (what get_record shows)."""

    def __init__(self, cls, rec):
        self.cls = cls
        self.ref = new_ref()
        # uuid first, as xapi's records have it.
        self.rec = dict({"uuid": rec.get("uuid") or new_uuid()}, **rec)
        # VDI-only state (harmless on other classes).
        self.path = None          # backing file, None once data is destroyed
        self.log = None           # CBT log (bytearray) or None
        self.cbt_parent = None    # previous node in the CBT chain (ref)
        self.cbt_child = None     # next node in the CBT chain (ref)
        self.override = None      # nbd_override record for get_nbd_info
        self.claims = None        # fields get_record shows instead of rec's


class Model:
    def __init__(self, state_dir, user, password, xapi_address, nbd_address,
                 cert_pem, subject, log):
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.vdi_dir = os.path.join(state_dir, "vdis")
        os.makedirs(self.vdi_dir, exist_ok=True)
        self.user = user
        self.password = password
        self.xapi_address = xapi_address
        self.slave_address = None     # set by xsim once the slave is bound
        self.nbd_address = nbd_address
        self.nbd_port = 0
        self.cert_pem = cert_pem
        self.subject = subject
        self.log = log
        self.objs = {c: {} for c in CLASSES}
        self.uuids = {c: {} for c in CLASSES}
        self.sessions = {}            # session ref -> {"uuid", "user"}
        self.knobs = {"data_destroy_wait": 4.0, "nbd_read_delay_ms": 0,
                      "xapi_delay_ms": 0,
                      # VDI.checksum reads the disk at this many MiB/s.
                      "checksum_mib_per_s": 0,
                      "nbd_drop_after_bytes": 0,
                      # The NBD server shows the impostor certificate
                      # (same names, another key) to new connections.
                      "nbd_impostor": False,
                      # GET /export_raw_vdi (export.py): which blocks a
                      # VHD export lists, and an injected fault.
                      "vhd_source": "hybrid", "vhd_fault": "none",
                      # Which host answers it: "master" (the SR is the
                      # master's), "slave" (the master sends the client
                      # there), "loop" (each sends it to the other), or
                      # an http:// URL the master sends it to.
                      "vhd_host": "master",
                      # PUT /import_raw_vdi: the next import's first
                      # write has one byte flipped (vdi_import.py).
                      "corrupt_import": False}
        self.fail_next = {}           # method -> [(ErrorDescription, ref), ...]
        self.fail_every = {}          # method -> ErrorDescription, until cleared
        self.return_next = {}         # method -> [[value], ...]: replace a result
        self.raw_next = {}            # method -> [body, ...]: answer verbatim
        self.expire_on = {}           # method -> [True, ...]: expire sessions first
        self.snapshot_claims = {}     # live VDI uuid -> claims of its next snapshot
        self.override = None          # nbd_override for every VDI ("*")
        self.nbd_open = 0             # gauge, not reset by reset_stats
        self.nbd_open_vdis = {}       # VDI uuid -> connections serving it
        self.next_domid = 1
        self.reset_stats()
        self._bootstrap()

    # ---- objects ---------------------------------------------------------

    def add(self, obj):
        self.objs[obj.cls][obj.ref] = obj
        self.uuids[obj.cls][obj.rec["uuid"]] = obj
        return obj

    def remove(self, obj):
        self.objs[obj.cls].pop(obj.ref, None)
        self.uuids[obj.cls].pop(obj.rec["uuid"], None)

    def get(self, cls, ref):
        obj = self.objs[cls].get(ref) if isinstance(ref, str) else None
        if obj is None:
            raise XapiError("HANDLE_INVALID", cls, ref)
        return obj

    def by_uuid(self, cls, uuid):
        obj = self.uuids[cls].get(uuid) if isinstance(uuid, str) else None
        if obj is None:
            raise XapiError("UUID_INVALID", cls, uuid)
        return obj

    def vdi_by_uuid_ctl(self, uuid):
        obj = self.uuids["VDI"].get(uuid)
        if obj is None:
            raise ControlError("no VDI with uuid %r" % (uuid,))
        return obj

    def vm_by_uuid_ctl(self, uuid):
        obj = self.uuids["VM"].get(uuid)
        if obj is None:
            raise ControlError("no VM with uuid %r" % (uuid,))
        return obj

    def record(self, obj):
        """The public record of OBJ, with the computed fields filled in."""
        r = {k: (list(v) if isinstance(v, list) else
                 dict(v) if isinstance(v, dict) else v)
             for k, v in obj.rec.items()}
        if obj.cls == "VDI":
            r["physical_utilisation"] = (disk.allocated_bytes(obj.path)
                                         if obj.path else 0)
            r["allowed_operations"] = self._vdi_allowed_operations(obj)
            # Only what clients are told changes: the data, the CBT log
            # and the exports keep the real size.
            if obj.claims:
                r.update(obj.claims)
        elif obj.cls == "SR":
            vdis = [self.objs["VDI"][v] for v in obj.rec["VDIs"]]
            r["virtual_allocation"] = sum(v.rec["virtual_size"] for v in vdis)
            r["physical_utilisation"] = sum(
                disk.allocated_bytes(v.path) for v in vdis if v.path)
        return r

    def _bootstrap(self):
        host = self.add(Obj("host", {
            "name_label": HOSTNAME, "name_description": "XenServer stand-in",
            "hostname": HOSTNAME, "address": self.xapi_address,
            "API_version_major": API_MAJOR, "API_version_minor": API_MINOR,
            "API_version_vendor": "XenSource", "enabled": True,
            "software_version": {"product_brand": "XenServer",
                                 "product_version": "8.4.0",
                                 "xapi": "%d.%d" % (API_MAJOR, API_MINOR)},
            "resident_VMs": [], "PBDs": [], "other_config": {}}))
        self.host = host
        sr = self.add(Obj("SR", {
            "name_label": "Local storage", "name_description": "",
            "allowed_operations": [], "current_operations": {}, "VDIs": [],
            "PBDs": [], "virtual_allocation": 0, "physical_utilisation": 0,
            "physical_size": 1 << 40, "type": "ext", "content_type": "user",
            "shared": False, "other_config": {}, "sm_config": {},
            "tags": []}))
        self.sr = sr
        # A second SR that only the pool's other host (the slave) sees,
        # as a host's local storage is: HTTP imports into its VDIs are
        # sent there (import_raw_vdi.ml, 302).
        self.slave_sr = self.add(Obj("SR", dict(
            {k: v for k, v in sr.rec.items() if k != "uuid"}, **{
            "name_label": "Local storage on xs-sim-2", "VDIs": [],
            "PBDs": [], "other_config": {}, "sm_config": {}, "tags": [],
            "allowed_operations": [], "current_operations": {}})))
        self.pool = self.add(Obj("pool", {
            "name_label": "", "name_description": "", "master": host.ref,
            "default_SR": sr.ref, "suspend_image_SR": sr.ref,
            "crash_dump_SR": sr.ref, "ha_enabled": False,
            "restrictions": {"restrict_cbt": "false"}, "other_config": {},
            "tags": []}))
        dom0 = self.add(Obj("VM", self._vm_rec(
            "Control domain on host: " + HOSTNAME, "Running")))
        dom0.rec.update(is_control_domain=True, domid=0, resident_on=host.ref)
        host.rec["resident_VMs"].append(dom0.ref)
        self.dom0 = dom0
        self.dom0_devices = 0
        tmpl = self.add(Obj("VM", self._vm_rec("Debian Bookworm 12", "Halted")))
        tmpl.rec.update(is_a_template=True, is_default_template=True)

    def fields(self, cls):
        """The record fields of class CLS (for the generic get_<field>)."""
        if cls == "VM":
            rec = self._vm_rec("", "Halted")
        elif cls == "VDI":
            rec = self._vdi_rec("", 0, "user")
        elif cls == "VBD":
            rec = self._vbd_rec(NULL, NULL, "", "", "", "", False, False)
        elif cls == "task":
            rec = self._task_rec("", "")
        else:
            rec = {"pool": self.pool, "host": self.host, "SR": self.sr}[cls].rec
        return ["uuid"] + [k for k in rec if k != "uuid"]

    @staticmethod
    def _vm_rec(name, power_state):
        return {"name_label": name, "name_description": "",
                "power_state": power_state, "allowed_operations": [],
                "current_operations": {}, "is_a_template": False,
                "is_default_template": False, "is_a_snapshot": False,
                "snapshot_of": NULL, "snapshots": [], "snapshot_time": EPOCH,
                "is_control_domain": False, "resident_on": NULL, "domid": -1,
                "VBDs": [], "VIFs": [], "memory_static_max": 1 << 30,
                "VCPUs_max": 1, "other_config": {}, "tags": []}

    # ---- sessions --------------------------------------------------------

    def login(self, user, password):
        if user != self.user or password != self.password:
            raise XapiError("SESSION_AUTHENTICATION_FAILED", user,
                            "Authentication failure")
        ref = new_ref()
        self.sessions[ref] = {"uuid": new_uuid(), "user": user}
        self.stats["sessions"]["logins"] += 1
        return ref

    def check_session(self, ref):
        if not isinstance(ref, str) or ref not in self.sessions:
            raise XapiError("SESSION_INVALID", ref)
        return self.sessions[ref]

    def logout(self, ref):
        if self.sessions.pop(ref, None) is not None:
            self.stats["sessions"]["logouts"] += 1

    # ---- VMs and VBDs ----------------------------------------------------

    def create_vm(self, name, disks, power_state="Running"):
        if not isinstance(name, str):
            raise ControlError("name must be a string")
        if power_state not in ("Running", "Halted", "Paused", "Suspended"):
            raise ControlError("bad power_state %r" % (power_state,))
        specs = []
        used = set()
        for i, d in enumerate(disks):
            size = d.get("size")
            if not isinstance(size, int) or size <= 0 or size % 512:
                raise ControlError("disk size must be a positive multiple of 512")
            ud = str(d.get("userdevice", i))
            if ud in used:
                raise ControlError("duplicate userdevice %s" % ud)
            used.add(ud)
            specs.append((str(d.get("name", "disk%d" % i)), size, ud,
                          str(d.get("type", "user"))))
        vm = self.add(Obj("VM", self._vm_rec(name, power_state)))
        running = power_state == "Running"
        if running:
            vm.rec.update(resident_on=self.host.ref, domid=self.next_domid)
            self.next_domid += 1
            self.host.rec["resident_VMs"].append(vm.ref)
        out = []
        for name_, size, ud, typ in specs:
            vdi = self.create_vdi(name_, size, typ)
            vbd = self.create_vbd(vm, vdi, ud, "Disk", "RW", running,
                                  bootable=(ud == "0"))
            out.append({"vdi": vdi.rec["uuid"], "vdi_ref": vdi.ref,
                        "vbd_ref": vbd.ref, "userdevice": ud,
                        "path": vdi.path})
        # Every real VM has a CD drive, usually empty: clients must skip it.
        numeric = [int(u) for u in used if u.isdigit()]
        cd_ud = str(max([3] + [n + 1 for n in numeric]))
        self.create_vbd(vm, None, cd_ud, "CD", "RO", running)
        self.log("created VM %s with %d disk(s)" % (vm.rec["uuid"], len(out)))
        return {"vm": vm.rec["uuid"], "vm_ref": vm.ref, "disks": out}

    @staticmethod
    def _vbd_rec(vm_ref, vdi_ref, userdevice, device, typ, mode, attached,
                 bootable):
        return {"allowed_operations": [], "current_operations": {},
                "VM": vm_ref, "VDI": vdi_ref, "device": device,
                "userdevice": userdevice, "bootable": bootable, "mode": mode,
                "type": typ, "unpluggable": True, "storage_lock": False,
                "empty": vdi_ref == NULL, "other_config": {},
                "currently_attached": attached, "status_code": 0,
                "status_detail": "", "qos_algorithm_type": ""}

    def create_vbd(self, vm, vdi, userdevice, typ, mode, attached,
                   bootable=False, device=None):
        vbd = self.add(Obj("VBD", self._vbd_rec(
            vm.ref, vdi.ref if vdi else NULL, userdevice,
            device or device_name(userdevice), typ, mode, attached, bootable)))
        vm.rec["VBDs"].append(vbd.ref)
        if vdi is not None:
            vdi.rec["VBDs"].append(vbd.ref)
        return vbd

    def destroy_vbd(self, vbd):
        vm = self.objs["VM"].get(vbd.rec["VM"])
        if vm is not None and vbd.ref in vm.rec["VBDs"]:
            vm.rec["VBDs"].remove(vbd.ref)
        vdi = self.objs["VDI"].get(vbd.rec["VDI"])
        if vdi is not None and vbd.ref in vdi.rec["VBDs"]:
            vdi.rec["VBDs"].remove(vbd.ref)
        self.remove(vbd)
        self.cond.notify_all()    # data_destroy may be waiting for this

    def snapshot_vm(self, vm, new_name, ignore_vdis=()):
        if vm.rec["is_control_domain"] or vm.rec["is_a_template"]:
            raise XapiError("OPERATION_NOT_ALLOWED",
                            "VM is a template or the control domain")
        t = now_seconds()
        snap = self.add(Obj("VM", self._vm_rec(new_name, "Halted")))
        snap.rec.update(is_a_snapshot=True, is_a_template=True,
                        snapshot_of=vm.ref, snapshot_time=DateTime(t),
                        name_description=vm.rec["name_description"])
        for ref in list(vm.rec["VBDs"]):
            vbd = self.objs["VBD"][ref]
            r = vbd.rec
            src = self.objs["VDI"].get(r["VDI"])
            if r["type"] == "Disk" and src is not None:
                if src.ref in ignore_vdis:
                    continue
                new = self.snapshot_vdi(src, t)
                self.create_vbd(snap, new, r["userdevice"], "Disk", r["mode"],
                                False, bootable=r["bootable"])
            elif r["type"] == "CD":
                self.create_vbd(snap, None, r["userdevice"], "CD", "RO", False)
        vm.rec["snapshots"].append(snap.ref)
        self.log("VM.snapshot of %s -> %s" % (vm.rec["uuid"], snap.rec["uuid"]))
        return snap

    def destroy_vm(self, vm):
        r = vm.rec
        if r["is_control_domain"]:
            raise XapiError("OPERATION_NOT_ALLOWED",
                            "Cannot destroy the control domain")
        if not r["is_a_snapshot"] and r["power_state"] != "Halted":
            raise XapiError("VM_BAD_POWER_STATE", vm.ref, "halted",
                            r["power_state"].lower())
        for ref in list(r["VBDs"]):
            self.destroy_vbd(self.objs["VBD"][ref])
        parent = self.objs["VM"].get(r["snapshot_of"])
        if parent is not None and vm.ref in parent.rec["snapshots"]:
            parent.rec["snapshots"].remove(vm.ref)
        if vm.ref in self.host.rec["resident_VMs"]:
            self.host.rec["resident_VMs"].remove(vm.ref)
        self.remove(vm)
        self.cond.notify_all()
        self.log("VM.destroy %s" % r["uuid"])

    def set_power_state(self, vm, state):
        """Control only: start/stop a VM (its disk VBDs attach/detach)."""
        if state not in ("Running", "Halted"):
            raise ControlError("state must be Running or Halted")
        if vm.rec["is_a_snapshot"] or vm.rec["is_a_template"] or \
                vm.rec["is_control_domain"]:
            raise ControlError("not an ordinary VM")
        running = state == "Running"
        vm.rec["power_state"] = state
        vm.rec["resident_on"] = self.host.ref if running else NULL
        vm.rec["domid"] = self.next_domid if running else -1
        self.next_domid += 1
        res = self.host.rec["resident_VMs"]
        if running and vm.ref not in res:
            res.append(vm.ref)
        elif not running and vm.ref in res:
            res.remove(vm.ref)
        for ref in vm.rec["VBDs"]:
            self.objs["VBD"][ref].rec["currently_attached"] = running
        self.cond.notify_all()

    # ---- VDIs ------------------------------------------------------------

    def _vdi_rec(self, name, size, typ):
        return {"name_label": name, "name_description": "",
                "allowed_operations": [], "current_operations": {},
                "SR": self.sr.ref, "VBDs": [], "crash_dumps": [],
                "virtual_size": size, "physical_utilisation": 0, "type": typ,
                "sharable": False, "read_only": False, "other_config": {},
                "storage_lock": False, "location": "", "managed": True,
                "missing": False, "parent": NULL, "xenstore_data": {},
                "sm_config": {}, "is_a_snapshot": False, "snapshot_of": NULL,
                "snapshots": [], "snapshot_time": EPOCH, "tags": [],
                "allow_caching": False, "on_boot": "persist",
                "metadata_of_pool": NULL, "metadata_latest": False,
                "is_tools_iso": False, "cbt_enabled": False}

    def create_vdi(self, name, size, typ="user", sr=None):
        sr = sr or self.sr
        vdi = Obj("VDI", self._vdi_rec(name, size, typ))
        vdi.rec["SR"] = sr.ref
        vdi.rec["location"] = vdi.rec["uuid"]
        vdi.path = os.path.join(self.vdi_dir, vdi.rec["uuid"] + ".img")
        disk.create(vdi.path, size)
        self.add(vdi)
        sr.rec["VDIs"].append(vdi.ref)
        return vdi

    def vdi_create(self, r):
        """VDI.create (xapi_vdi.ml create): a new empty VDI on an SR.  Only
        the fields a client may set are taken from R; the SM (an ext SR,
        VHD files) rounds the size up to whole 2 MiB blocks
        (sm vhdutil.validate_and_round_vhd_size)."""
        if not isinstance(r, dict):
            raise XapiError("FIELD_TYPE_ERROR", "VDI record")
        for k in ("SR", "virtual_size", "type"):
            if k not in r:
                raise XapiError("FIELD_TYPE_ERROR", k)
        if r["type"] == "cbt_metadata":
            raise XapiError("VDI_INCOMPATIBLE_TYPE", "", "cbt_metadata")
        sr = self.get("SR", r["SR"])
        try:
            size = int(r["virtual_size"])
        except (TypeError, ValueError):
            raise XapiError("FIELD_TYPE_ERROR", "virtual_size")
        if size < 0 or size > MAX_VHD_SIZE:
            raise XapiError("SR_BACKEND_FAILURE_79", "",
                            "VDI Invalid size [opterr=VDI size must be "
                            "between 1 MB and %d MB]" % (MAX_VHD_SIZE >> 20),
                            "")
        size = (size + VHD_BLOCK - 1) // VHD_BLOCK * VHD_BLOCK
        vdi = self.create_vdi(str(r.get("name_label", "")), size,
                              str(r["type"]), sr)
        for k in ("name_description", "sharable", "read_only"):
            if k in r:
                vdi.rec[k] = r[k]
        for k in ("other_config", "xenstore_data", "sm_config"):
            if isinstance(r.get(k), dict):
                vdi.rec[k] = dict(r[k])
        if isinstance(r.get("tags"), list):
            vdi.rec["tags"] = list(r["tags"])
        self.log("VDI.create %s (%d bytes) on %s" % (vdi.rec["uuid"], size,
                                                     sr.rec["name_label"]))
        return vdi

    # ---- tasks (only what HTTP handlers and task.create need) -------------

    @staticmethod
    def _task_rec(label, description):
        return {"name_label": label, "name_description": description,
                "allowed_operations": [], "current_operations": {},
                "created": DateTime(now_seconds()), "finished": EPOCH,
                "status": "pending", "resident_on": NULL, "progress": 0.0,
                "type": "<none/>", "result": "", "error_info": [],
                "other_config": {}, "subtask_of": NULL, "subtasks": [],
                "backtrace": "()"}

    def create_task(self, label, description=""):
        task = Obj("task", self._task_rec(label, description))
        task.rec["resident_on"] = self.host.ref
        return self.add(task)

    def finish_task(self, task, result=None, error=None):
        """TaskHelper.complete (RESULT: the XML of a value, as xapi keeps
        it) or TaskHelper.failed (ERROR: [CODE, params...])."""
        if task is None or task.ref not in self.objs["task"]:
            return
        if error is None:
            task.rec.update(status="success", progress=1.0,
                            result=result or "")
        else:
            task.rec.update(status="failure", error_info=list(error))
        task.rec["finished"] = DateTime(now_seconds())
        self.cond.notify_all()

    def active_vbds(self, vdi):
        """VBDs of VDI that are currently attached (as xapi's 'active')."""
        out = []
        for ref in vdi.rec["VBDs"]:
            vbd = self.objs["VBD"].get(ref)
            if vbd is not None and vbd.rec["currently_attached"]:
                out.append(vbd)
        return out

    def check_vdi_op(self, vdi, op):
        """xapi_vdi.ml check_operation_error, for the operations we have."""
        ref, r = vdi.ref, vdi.rec
        live_ops = ("snapshot", "clone", "enable_cbt", "disable_cbt",
                    "data_destroy")
        if op not in live_ops:
            active = self.active_vbds(vdi)
            if op == "list_changed_blocks":
                # CA-265050: VBDs of VM snapshots do not count.
                active = [v for v in active if not self.objs["VM"].get(
                    v.rec["VM"], self.dom0).rec["is_a_snapshot"]]
            if active:
                raise XapiError("VDI_IN_USE", ref, op)
        if r["type"] == "cbt_metadata" and op in (
                "clone", "copy", "disable_cbt", "enable_cbt", "resize",
                "snapshot"):
            raise XapiError("VDI_INCOMPATIBLE_TYPE", ref, "cbt_metadata")
        if op == "data_destroy":
            if not r["is_a_snapshot"]:
                raise XapiError("OPERATION_NOT_ALLOWED",
                                "VDI is not a snapshot: " + ref)
            if not r["cbt_enabled"]:
                raise XapiError("VDI_NO_CBT_METADATA", ref)
        elif op == "snapshot":
            if r["sharable"]:
                raise XapiError("VDI_IS_SHARABLE", ref)
            if r["on_boot"] == "reset":
                raise XapiError("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION")
        elif op in ("enable_cbt", "disable_cbt"):
            if r["is_a_snapshot"]:
                raise XapiError("OPERATION_NOT_ALLOWED",
                                "VDI is a snapshot: " + ref)
            if r["type"] not in ("user", "system"):
                raise XapiError("VDI_INCOMPATIBLE_TYPE", ref, r["type"])
            if r["on_boot"] == "reset":
                raise XapiError("VDI_ON_BOOT_MODE_INCOMPATIBLE_WITH_OPERATION")

    def _vdi_allowed_operations(self, vdi):
        ops = []
        for op in ("clone", "copy", "destroy", "forget", "resize", "snapshot",
                   "update", "generate_config", "enable_cbt", "disable_cbt",
                   "data_destroy", "list_changed_blocks"):
            try:
                self.check_vdi_op(vdi, op)
            except XapiError:
                continue
            ops.append(op)
        return ops

    def snapshot_vdi(self, src, t=None):
        """VDI.snapshot: copy the data, hand the CBT log over (docs/xapi.md,
        "The CBT bitmap")."""
        self.check_vdi_op(src, "snapshot")
        if src.path is None:
            raise XapiError("VDI_INCOMPATIBLE_TYPE", src.ref, src.rec["type"])
        r = src.rec
        snap = Obj("VDI", self._vdi_rec(r["name_label"], r["virtual_size"],
                                        r["type"]))
        snap.rec.update(name_description=r["name_description"],
                        is_a_snapshot=True, snapshot_of=src.ref,
                        snapshot_time=DateTime(now_seconds() if t is None else t),
                        cbt_enabled=r["cbt_enabled"],
                        location=snap.rec["uuid"])
        claims = self.snapshot_claims.pop(r["uuid"], None)
        if claims:
            snap.claims = claims
            self.log("snapshot of %s claims %s" % (r["uuid"], ", ".join(
                "%s=%s" % kv for kv in sorted(claims.items()))))
        snap.path = os.path.join(self.vdi_dir, snap.rec["uuid"] + ".img")
        disk.sparse_copy(src.path, snap.path, r["virtual_size"])
        if r["cbt_enabled"] and src.log is not None:
            # The snapshot takes the current log and goes between the previous
            # snapshot and the live VDI; the live VDI starts an empty log.
            snap.log = src.log
            snap.cbt_parent = src.cbt_parent
            snap.cbt_child = src.ref
            prev = self.objs["VDI"].get(src.cbt_parent)
            if prev is not None:
                prev.cbt_child = snap.ref
            src.cbt_parent = snap.ref
            src.log = bytearray(bitmap_len(r["virtual_size"]))
        elif src.rec["is_a_snapshot"]:
            snap.rec["cbt_enabled"] = False   # a copy of a copy: no chain
        self.add(snap)
        snap.rec["SR"] = r["SR"]
        self.objs["SR"][r["SR"]].rec["VDIs"].append(snap.ref)
        r["snapshots"].append(snap.ref)
        return snap

    def enable_cbt(self, vdi):
        self.check_vdi_op(vdi, "enable_cbt")
        if not vdi.rec["cbt_enabled"]:
            vdi.rec["cbt_enabled"] = True
            # A new incremental set: cbt_parent is already None (disable
            # and reset_cbt unlink the live log), so no older link exists.
            vdi.log = bytearray(bitmap_len(vdi.rec["virtual_size"]))
            self.log("CBT enabled on %s" % vdi.rec["uuid"])

    def _drop_live_log(self, vdi):
        prev = self.objs["VDI"].get(vdi.cbt_parent)
        if prev is not None:
            prev.cbt_child = None
        vdi.cbt_parent = None
        vdi.log = None
        vdi.rec["cbt_enabled"] = False

    def disable_cbt(self, vdi):
        self.check_vdi_op(vdi, "disable_cbt")
        if vdi.rec["cbt_enabled"]:
            self._drop_live_log(vdi)
            self.log("CBT disabled on %s" % vdi.rec["uuid"])

    def reset_cbt(self, vdi):
        """Control: a host crash; the log is lost and CBT is off (docs/xapi.md,
        "The CBT bitmap")."""
        if vdi.rec["is_a_snapshot"]:
            raise ControlError("reset_cbt applies to live VDIs")
        self._drop_live_log(vdi)
        self.log("CBT reset (crash) on %s" % vdi.rec["uuid"])

    def list_changed_blocks(self, vfrom, vto):
        self.check_vdi_op(vto, "list_changed_blocks")
        if vfrom is vto:
            raise XapiError("SR_BACKEND_FAILURE_460", "",
                            "Failed to calculate changed blocks for given "
                            "VDIs. [opterr=Source and target VDI are same]", "")
        n = bitmap_len(vto.rec["virtual_size"])
        acc = bytes(n)
        node = self.objs["VDI"].get(vfrom.cbt_child) if vfrom.log is not None \
            else None
        while node is not None and node.log is not None:
            acc = bitmap_or(acc, node.log, n)
            if node is vto:
                return acc
            node = self.objs["VDI"].get(node.cbt_child)
        raise XapiError("SR_BACKEND_FAILURE_460", "",
                        "Failed to calculate changed blocks for given VDIs. "
                        "[opterr=Source and target VDI are unrelated]", "")

    def begin_data_destroy(self, vdi):
        """First half of VDI.data_destroy; returns the type to restore on failure."""
        self.check_vdi_op(vdi, "data_destroy")
        old = vdi.rec["type"]
        # As xapi does: mark it cbt_metadata first so no new VBD (e.g. an
        # NBD attach) can appear while we wait for the old ones to go.
        vdi.rec["type"] = "cbt_metadata"
        return old

    def wait_no_vbds(self, vdi, timeout):
        """Wait (lock released meanwhile) until VDI has no VBDs; True if so."""
        deadline = time.monotonic() + timeout
        while vdi.rec["VBDs"] and vdi.ref in self.objs["VDI"]:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.cond.wait(left)
        return not vdi.rec["VBDs"]

    def reclaim(self, path):
        """Let go of a VDI's data, as an SR's garbage collector does:
        XAPI answers before the space is back, so a test of a big disk
        does not wait for the unlink (renamed first, so the name is free
        at once; an open NBD reader keeps its data either way)."""
        trash = path + ".gc"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        threading.Thread(target=os.unlink, args=(trash,), daemon=True).start()

    def finish_data_destroy(self, vdi):
        if vdi.path is not None:
            self.reclaim(vdi.path)
            vdi.path = None
        self.log("data_destroy %s" % vdi.rec["uuid"])

    def destroy_vdi(self, vdi):
        self.check_vdi_op(vdi, "destroy")
        # Keep later diffs right: fold this log into the next node
        # (docs/xapi.md, "Snapshots on the host").
        child = self.objs["VDI"].get(vdi.cbt_child)
        parent = self.objs["VDI"].get(vdi.cbt_parent)
        if child is not None:
            if vdi.log is not None and child.log is not None:
                n = max(len(child.log), len(vdi.log))
                child.log = bytearray(bitmap_or(child.log, vdi.log, n))
            child.cbt_parent = parent.ref if parent is not None else None
        if parent is not None:
            parent.cbt_child = child.ref if child is not None else None
        for ref in list(vdi.rec["VBDs"]):
            self.destroy_vbd(self.objs["VBD"][ref])
        src = self.objs["VDI"].get(vdi.rec["snapshot_of"])
        if src is not None and vdi.ref in src.rec["snapshots"]:
            src.rec["snapshots"].remove(vdi.ref)
        sr = self.objs["SR"].get(vdi.rec["SR"])
        if sr is not None and vdi.ref in sr.rec["VDIs"]:
            sr.rec["VDIs"].remove(vdi.ref)
        if vdi.path is not None:
            self.reclaim(vdi.path)
            vdi.path = None
        self.remove(vdi)
        self.cond.notify_all()
        self.log("VDI.destroy %s" % vdi.rec["uuid"])

    def resize_vdi(self, vdi, size, check=True):
        if check:
            self.check_vdi_op(vdi, "resize")
        if vdi.rec["is_a_snapshot"] or vdi.path is None:
            raise XapiError("OPERATION_NOT_ALLOWED",
                            "VDI is a snapshot: " + vdi.ref)
        size = (size + 511) // 512 * 512     # SMs round sizes up
        if size < vdi.rec["virtual_size"]:
            raise XapiError("SR_BACKEND_FAILURE_79", "",
                            "VDI Invalid size [opterr=shrinking not allowed]",
                            "")
        os.truncate(vdi.path, size)
        vdi.rec["virtual_size"] = size
        if vdi.log is not None:
            vdi.log.extend(bytes(bitmap_len(size) - len(vdi.log)))
        self.log("resized %s to %d" % (vdi.rec["uuid"], size))
        return size

    # ---- guest writes (control) ------------------------------------------

    def _mark(self, vdi, offset, length):
        if vdi.rec["cbt_enabled"] and vdi.log is not None and length > 0:
            mark_blocks(vdi.log, offset // BLOCK,
                        (offset + length + BLOCK - 1) // BLOCK)

    def guest_write(self, vdi, offset, data):
        if vdi.rec["is_a_snapshot"] or vdi.path is None:
            raise ControlError("guest writes go to live VDIs only")
        if offset < 0 or offset + len(data) > vdi.rec["virtual_size"]:
            raise ControlError("write beyond the end of the disk")
        fd = os.open(vdi.path, os.O_WRONLY)
        try:
            os.pwrite(fd, data, offset)
        finally:
            os.close(fd)
        self._mark(vdi, offset, len(data))

    def write_file(self, vdi, path):
        """Make VDI's content equal to PATH (rest zero), writing only the
        64 KiB blocks that differ; both sides' holes are skipped."""
        if vdi.rec["is_a_snapshot"] or vdi.path is None:
            raise ControlError("guest writes go to live VDIs only")
        size = vdi.rec["virtual_size"]
        try:
            src = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise ControlError("cannot open %s: %s" % (path, e.strerror))
        try:
            src_size = os.fstat(src).st_size
            if src_size > size:
                raise ControlError("file is larger than the disk")
            dst = os.open(vdi.path, os.O_RDWR)
            try:
                # Blocks that are holes on both sides are equal (zeros).
                extents = list(disk.data_extents(src, src_size))
                extents += list(disk.data_extents(dst, size))
                changed = 0
                for first, last in disk.block_ranges(extents):
                    for b in range(first, last):
                        off = b * BLOCK
                        n = min(BLOCK, size - off)
                        want = disk.pread_full(src, max(0, min(n, src_size - off)), off)
                        want = want.ljust(n, b"\0")
                        have = disk.pread_full(dst, n, off)
                        if want != have:
                            os.pwrite(dst, want, off)
                            self._mark(vdi, off, n)
                            changed += 1
            finally:
                os.close(dst)
        finally:
            os.close(src)
        return changed

    # ---- NBD attach (xapi-nbd's dom0 VBD) ----------------------------------

    def nbd_attach(self, vdi_uuid, session_ref):
        """What xapi-nbd does after EXPORT_NAME: check the session, find the
        VDI, plug a read-only VBD into dom0.  Returns (vdi, vbd, fd) or None
        (the connection is then closed without a reply)."""
        if session_ref not in self.sessions:
            return None
        vdi = self.uuids["VDI"].get(vdi_uuid)
        if vdi is None or vdi.path is None or vdi.rec["type"] == "cbt_metadata":
            return None
        # VBD.plug refuses a second attach next to a RW one (not sharable).
        if any(v.rec["mode"] == "RW" for v in self.active_vbds(vdi)):
            return None
        try:
            fd = os.open(vdi.path, os.O_RDONLY)
        except OSError:
            return None
        self.dom0_devices += 1
        vbd = self.create_vbd(self.dom0, vdi, "autodetect", "Disk", "RO",
                              True, device="nbd%d" % self.dom0_devices)
        return vdi, vbd, fd

    def nbd_detach(self, vbd):
        if vbd.ref in self.objs["VBD"]:
            self.destroy_vbd(vbd)

    # ---- statistics --------------------------------------------------------

    def reset_stats(self):
        self.stats = {
            "nbd": {"connections": 0, "refused": 0, "requests": 0,
                    "bytes": 0, "handshakes": 0, "impostor_handshakes": 0,
                    "export_names": 0, "by_vdi": {},
                    # Peaks since the reset: connections open at once
                    # (admitted ones), and VDIs served at once.
                    "max_open": self.nbd_open,
                    "max_vdis_open": len(self.nbd_open_vdis)},
            "xapi": {"calls": {}},
            "sessions": {"logins": 0, "logouts": 0},
            "http": {"export_raw_vdi": {"requests": 0, "bytes": 0,
                                        "redirects": 0, "slave_served": 0},
                     "import_raw_vdi": {"requests": 0, "bytes": 0,
                                        "redirects": 0, "slave_served": 0}},
        }

    def nbd_opened(self):
        """An admitted connection (under the lock)."""
        self.nbd_open += 1
        nbd = self.stats["nbd"]
        nbd["connections"] += 1
        nbd["max_open"] = max(nbd["max_open"], self.nbd_open)

    def nbd_serving(self, vdi_uuid, delta):
        """A connection starts (+1) or stops (-1) serving VDI_UUID."""
        n = self.nbd_open_vdis.get(vdi_uuid, 0) + delta
        if n > 0:
            self.nbd_open_vdis[vdi_uuid] = n
        else:
            self.nbd_open_vdis.pop(vdi_uuid, None)
        nbd = self.stats["nbd"]
        nbd["max_vdis_open"] = max(nbd["max_vdis_open"],
                                   len(self.nbd_open_vdis))

    def count_call(self, method):
        calls = self.stats["xapi"]["calls"]
        calls[method] = calls.get(method, 0) + 1

    def count_read(self, vdi_uuid, offset, length, sent):
        nbd = self.stats["nbd"]
        nbd["bytes"] += sent
        v = nbd["by_vdi"].setdefault(vdi_uuid, {"requests": 0, "bytes": 0,
                                                "blocks": set()})
        v["bytes"] += sent
        if offset is not None:
            nbd["requests"] += 1
            v["requests"] += 1
            if length > 0:
                v["blocks"].update(range(offset // BLOCK,
                                         (offset + length - 1) // BLOCK + 1))

    def stats_json(self):
        nbd = self.stats["nbd"]
        return {
            "nbd": {"connections": nbd["connections"], "open": self.nbd_open,
                    "max_open": nbd["max_open"],
                    "max_vdis_open": nbd["max_vdis_open"],
                    "refused": nbd["refused"], "requests": nbd["requests"],
                    "bytes": nbd["bytes"], "handshakes": nbd["handshakes"],
                    "impostor_handshakes": nbd["impostor_handshakes"],
                    "export_names": nbd["export_names"],
                    "by_vdi": {u: {"requests": v["requests"],
                                   "bytes": v["bytes"],
                                   "blocks": sorted(v["blocks"])}
                               for u, v in nbd["by_vdi"].items()}},
            "xapi": {"calls": dict(self.stats["xapi"]["calls"])},
            "http": {k: dict(v) for k, v in self.stats["http"].items()},
            "sessions": {"active": len(self.sessions),
                         "logins": self.stats["sessions"]["logins"],
                         "logouts": self.stats["sessions"]["logouts"]},
        }
