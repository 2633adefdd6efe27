"""The processes of one launch: accelerate's state (``process_group``) and ``on_main``, work done by the main
process alone while the others wait for its result."""

from __future__ import annotations

from ..errors import HfCompressError


def on_main(group, work, *args):
    """``work(*args)`` on the main process only, its result given to every process; the others wait. A failure
    there is raised on every process (the others would otherwise wait forever). ``group`` None: one process."""
    result, error = None, None
    if group is None or group.is_main_process:
        try:
            result = work(*args)
        except BaseException as e:  # noqa: BLE001 - raised below, after the others heard of it
            error = e
    if group is not None and group.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        message = [f"{type(error).__name__}: {error}" if error else None, None if error else result]
        broadcast_object_list(message, from_process=0)
        if message[0] and error is None:
            raise HfCompressError(f"the main process failed: {message[0]}")
        result = message[1]
    if error is not None:
        raise error
    return result


def process_group():
    """accelerate's state of this launch: one process, or the group ``accelerate launch`` started (a gloo group
    of CPU processes on a machine without GPUs)."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    from ..distillation.config import multi_process_without_accelerator

    group = PartialState(cpu=multi_process_without_accelerator())
    if group.distributed_type == DistributedType.MULTI_CPU:
        # accelerate gives CPU processes the device "cpu:0", and Trainer resuming a checkpoint loads the
        # optimizer with map_location=that device, which torch.load can't restore ("don't know how to restore
        # data location ... (tagged with cpu:0)"). CPU storage needs no moving: teach torch.load that tag.
        global _CPU_TAG_REGISTERED
        if not _CPU_TAG_REGISTERED:
            torch.serialization.register_package(11, _no_tag, _indexed_cpu)  # 11: unused by torch, after "cpu"
            _CPU_TAG_REGISTERED = True
    return group


_CPU_TAG_REGISTERED = False


def _no_tag(obj) -> None:
    return None  # tags nothing when saving: "cpu" storages keep torch's own tag


def _indexed_cpu(storage, location: str):
    """torch.load's restore of a storage tagged 'cpu:N' (the storage, as it is); None for any other tag."""
    return storage if location.startswith("cpu:") else None
