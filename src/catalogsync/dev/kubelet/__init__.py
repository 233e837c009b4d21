"""The process kubelet: Nodes whose Pods run as local processes, for tests with a real API server.

The harness registers Node objects (capacity, allocatable, labels and taints chosen by the test),
watches the Pods the real scheduler binds to them, and runs each container's command as a local
subprocess. It writes pod status the way a kubelet does, so the real Job, CronJob and garbage
collector controllers see the lifecycle they expect: Pending (``ContainerCreating``) → Running
(``startTime``, Ready conditions, ``state.running``) → Succeeded / Failed (``state.terminated`` with
``exitCode``, ``reason`` Completed / Error / OOMKilled, the termination message, ``startedAt`` and
``finishedAt``).

Images. There are no containers. A container whose image repository's last path component is one
of ``project_images`` (default ``catalogsync``, so ``catalogsync``, ``ghcr.io/x/catalogsync:1.2``)
runs locally; the image's entrypoint is the ``catalogsync`` console script, so ``args`` alone run
``catalogsync <args>``. With ``command`` the command runs as given; a bare or absolute program name
is looked up in the virtualenv's ``bin`` first (``catalogsync``, ``python``, ``sh``), ``python`` and
``python3`` are this interpreter. Any other image is refused: the container waits with reason
``ErrImagePull`` and a message naming the rule, and the pod stays Pending like on a real node that
cannot pull.

Environment. ``env`` and ``envFrom`` are resolved like the kubelet does: values with ``$(VAR)``
expansion, ``secretKeyRef`` / ``configMapKeyRef`` (``optional`` honoured; a missing object or key
keeps the container waiting with ``CreateContainerConfigError`` and is retried), ``fieldRef``
(``metadata.name|namespace|uid``, ``metadata.labels['k']``, ``metadata.annotations['k']``,
``spec.nodeName``, ``spec.serviceAccountName``, ``status.podIP``, ``status.hostIP``) and
``resourceFieldRef`` (unset limits default to the Node's allocatable). The process also gets
``PATH`` (virtualenv first), and ``HOME``, ``TMPDIR``, ``HOSTNAME`` for the pod's directory.

Credentials. Unless automounting is disabled (pod or ServiceAccount), the harness mints a token for
the pod's ServiceAccount through TokenRequest (bound to the pod), writes a kubeconfig for it and
sets ``KUBECONFIG``; the project's code prefers ``KUBECONFIG`` over in-cluster configuration.

Termination messages. A process cannot write the container's ``terminationMessagePath`` (usually
``/dev/termination-log``), so each container gets ``CATALOGSYNC_TERMINATION_MESSAGE_PATH`` set to a
file in the pod's directory; the project's code writes its summary there when the variable is set.
After exit the file is read (at most 4096 bytes) into ``state.terminated.message``;
``FallbackToLogsOnError`` uses the log tail when the file is empty and the exit code is non-zero.

Deletion. When a pod gets a ``deletionTimestamp`` (the Job controller removing surplus pods, an
``activeDeadlineSeconds`` or ``FailJob`` outcome, a namespace going away) its processes get SIGTERM,
then SIGKILL after the grace period; the pod is reported terminal (Failed unless every container
exited 0) and then deleted with grace 0. Finalizers such as ``batch.kubernetes.io/job-tracking``
are never touched: the Job controller removes its own. A pod's own ``activeDeadlineSeconds`` stops
it the same way (without the deletion), with reason ``DeadlineExceeded``.

Not emulated: container isolation, cgroups and real memory limits (``oom_kill`` simulates an OOM
kill), networking (every pod's IP is 127.0.0.1), volumes (``emptyDir`` volumes become directories;
one mounted at ``/tmp`` becomes ``TMPDIR``; mount paths are not honoured), probes (containers are
Ready once started), sidecar semantics of restartable init containers (they run like ordinary init
containers), image pull policies, ``kubectl exec`` / ``logs`` through the API (use ``logs``), node
heartbeats (the node-lifecycle controller is off), and the kubelet's 10 s crash-loop back-off
(``restart_backoff`` is shorter by default).

Modules: ``nodes`` (Node objects, Leases), ``env`` (env/envFrom resolution), ``credentials``
(ServiceAccount tokens), ``images`` (the image → command rule), ``containers`` (a container's
process state, termination messages, signals), ``status`` (pod status builders), ``pods`` (one
pod's lifecycle), ``logs`` (the HTTPS log endpoint), ``kubelet`` (ProcessKubelet), ``thread``
(KubeletThread), ``cli`` (``catalogsync kubelet``), ``sandbox`` and ``chroot`` (containers run
inside the built image's root filesystem, when the kubelet is given an ``ImageSandbox``).
"""

from catalogsync.common.quantities import parse_quantity
from catalogsync.dev.kubelet.api import Api, ApiError
from catalogsync.dev.kubelet.cli import main, parse_node
from catalogsync.dev.kubelet.containers import TERMINATION_ENV, ContainerRun
from catalogsync.dev.kubelet.credentials import Credentials
from catalogsync.dev.kubelet.env import ContainerConfigError, expand, field_value
from catalogsync.dev.kubelet.images import ImageRefused, ImageRule, image_repository
from catalogsync.dev.kubelet.kubelet import ProcessKubelet
from catalogsync.dev.kubelet.logs import LogServer
from catalogsync.dev.kubelet.nodes import POD_IP, NodeConfig
from catalogsync.dev.kubelet.pods import PodWorker
from catalogsync.dev.kubelet.thread import KubeletThread

__all__ = [
    "POD_IP",
    "TERMINATION_ENV",
    "Api",
    "ApiError",
    "ContainerConfigError",
    "ContainerRun",
    "Credentials",
    "ImageRefused",
    "ImageRule",
    "KubeletThread",
    "LogServer",
    "NodeConfig",
    "PodWorker",
    "ProcessKubelet",
    "expand",
    "field_value",
    "image_repository",
    "main",
    "parse_node",
    "parse_quantity",
]
