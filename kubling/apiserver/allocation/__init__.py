"""Service address allocation: ClusterIPs and NodePorts, as kube-apiserver hands them out.

* ``bitmap``: the ranges (a service CIDR, a node-port range) and a bitmap over each, with
  upstream's random scan that keeps a low band for addresses users choose themselves.
* ``record``: one bitmap persisted as a ``RangeAllocation`` record in storage, written with a
  compare-and-swap on its revision; allocations that arrive together share one write.
* ``service``: what a Service create, update or delete allocates and releases, as one
  operation that is rolled back when the Service write fails and whose releases happen only
  after the write is committed (better to leak than to hand an address out twice).
* ``repair``: rebuild the bitmaps from the Services in storage at start-up, freeing leaks
  left by a crash between allocation and Service write.
"""
