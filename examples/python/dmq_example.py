#!/usr/bin/env python3
"""DistributedMQ from Python: a client generated from proto/ with grpcio-tools.

Creates a topic, produces a few records and consumes them back, following the leader hints
the servers give: a controller that is not the leader answers FAILED_PRECONDITION with the
leader's address in the `x-controller-leader` metadata; a broker that does not lead a
partition answers FAILED_PRECONDITION with `x-partition-leader`.

    pip install grpcio grpcio-tools
    python3 examples/python/dmq_example.py --bootstrap 127.0.0.1:9000,127.0.0.1:9001,127.0.0.1:9002

The stubs are generated at start into a temporary folder (see generate_stubs), so the only
source of truth is proto/dmq/v1/*.proto.
"""

import argparse
import importlib
import os
import sys
import tempfile
import time
import uuid

import grpc

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def generate_stubs():
    """Runs grpc_tools.protoc on proto/dmq/v1/*.proto and imports the result."""
    from grpc_tools import protoc
    import grpc_tools

    out = tempfile.mkdtemp(prefix="dmq-py-")
    proto_dir = os.path.join(ROOT, "proto")
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = [os.path.join("dmq", "v1", f) for f in sorted(os.listdir(os.path.join(proto_dir, "dmq", "v1")))]
    code = protoc.main(["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"] + files)
    if code != 0:
        sys.exit(f"protoc failed ({code})")
    sys.path.insert(0, out)
    return (
        importlib.import_module("dmq.v1.controller_pb2"),
        importlib.import_module("dmq.v1.controller_pb2_grpc"),
        importlib.import_module("dmq.v1.broker_pb2"),
        importlib.import_module("dmq.v1.broker_pb2_grpc"),
    )


cpb, cgrpc, bpb, bgrpc = generate_stubs()


def hint(err, key):
    """The leader address a FAILED_PRECONDITION answer carries in its metadata, if any."""
    for k, v in (err.trailing_metadata() or ()):
        if k == key:
            return v
    return None


class Controllers:
    """Calls the controller leader, following x-controller-leader hints (bounded retries)."""

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap
        self.leader = None

    def find_leader(self):
        for addr in self.bootstrap:
            try:
                info = cgrpc.ControllerServiceStub(grpc.insecure_channel(addr)).GetControllerInfo(
                    cpb.GetControllerInfoRequest(), timeout=2)
                if info.leader_address:
                    return info.leader_address
            except grpc.RpcError:
                continue
        return None

    def call(self, method, request, attempts=20):
        last = None
        for _ in range(attempts):
            addr = self.leader or self.find_leader()
            if addr is None:
                time.sleep(0.2)
                continue
            stub = cgrpc.ControllerServiceStub(grpc.insecure_channel(addr))
            try:
                return getattr(stub, method)(request, timeout=10)
            except grpc.RpcError as err:
                last = err
                if err.code() == grpc.StatusCode.FAILED_PRECONDITION and hint(err, "x-controller-leader"):
                    self.leader = hint(err, "x-controller-leader")
                    print(f"not the leader; redirected to {self.leader}", file=sys.stderr)
                elif err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    self.leader = None
                    time.sleep(0.2)
                else:
                    raise
        raise last


def partition_leader(controllers, topic, partition):
    md = controllers.call("GetMetadata", cpb.GetMetadataRequest())
    brokers = {b.broker_id: f"{b.host}:{b.port}" for b in md.brokers}
    for t in md.topics:
        if t.name == topic:
            return brokers.get(t.partitions[partition].leader)
    return None


def call_partition_leader(controllers, topic, partition, method, request, attempts=30):
    """Calls the partition leader, following x-partition-leader hints and refreshing metadata."""
    addr = partition_leader(controllers, topic, partition)
    last = None
    for _ in range(attempts):
        if addr is None:
            time.sleep(0.2)
            addr = partition_leader(controllers, topic, partition)
            continue
        stub = bgrpc.BrokerServiceStub(grpc.insecure_channel(addr))
        try:
            return getattr(stub, method)(request, timeout=15)
        except grpc.RpcError as err:
            last = err
            if err.code() == grpc.StatusCode.FAILED_PRECONDITION and hint(err, "x-partition-leader"):
                addr = hint(err, "x-partition-leader")
                print(f"not the partition leader; redirected to {addr}", file=sys.stderr)
            elif err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION):
                time.sleep(0.2)
                addr = partition_leader(controllers, topic, partition)
            else:
                raise
    raise last


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", default=os.environ.get("DMQ_BOOTSTRAP", "127.0.0.1:9000,127.0.0.1:9001,127.0.0.1:9002"))
    p.add_argument("--topic", default=f"python-example-{uuid.uuid4().hex[:8]}")
    p.add_argument("--records", type=int, default=10)
    args = p.parse_args()
    controllers = Controllers([a.strip() for a in args.bootstrap.split(",") if a.strip()])

    brokers = len([b for b in controllers.call("DescribeCluster", cpb.DescribeClusterRequest()).brokers
                   if b.status == cpb.BROKER_STATUS_ONLINE])
    rf = min(3, max(1, brokers))
    topic = controllers.call("CreateTopic", cpb.CreateTopicRequest(name=args.topic, partitions=1, replication_factor=rf)).topic
    print(f"created topic {topic.name} (1 partition, replication factor {rf})")

    records = [bpb.Record(key=f"k{i}".encode(), value=f"hello {i} from python".encode()) for i in range(args.records)]
    resp = call_partition_leader(controllers, topic.name, 0, "Produce",
                                 bpb.ProduceRequest(topic=topic.name, partition=0, acks=bpb.ACKS_ALL, records=records))
    print(f"produced {len(records)} records at offsets {resp.base_offset}..{resp.last_offset}")

    got = []
    offset = resp.base_offset
    deadline = time.time() + 20
    while len(got) < len(records) and time.time() < deadline:
        f = call_partition_leader(controllers, topic.name, 0, "Fetch",
                                  bpb.FetchRequest(topic=topic.name, partition=0, offset=offset, max_wait_ms=500))
        got.extend(f.records)
        offset = f.next_offset
    for r in got:
        print(f"consumed offset {r.offset}: {r.key.decode()}={r.value.decode()}")
    if [r.value for r in got] != [r.value for r in records]:
        sys.exit(f"consumed {len(got)} records that do not match the {len(records)} produced")
    print("ok: every record produced was consumed, in order")


if __name__ == "__main__":
    main()
