# Write + fdatasync of 200 bytes, N times: one file alone, then two files from two threads at
# once (the event log and the audit log syncing together). docs/performance.md cites it.
# Run: python3 docs/examples/fdatasync_pair.py [DIR]  (DIR on the disk to measure; default /tmp)
import os, threading, time
def worker(path, n, out):
    fd = os.open(path, os.O_WRONLY|os.O_CREAT|os.O_APPEND, 0o644)
    t=time.perf_counter()
    for i in range(n):
        os.write(fd, b"x"*200); os.fdatasync(fd)
    out.append((time.perf_counter()-t)/n*1e6)
    os.close(fd)
import sys, tempfile
d = tempfile.mkdtemp(dir=sys.argv[1] if len(sys.argv) > 1 else None)
N=400
o=[]; worker(d+"/a", N, o); print("one file alone: %.0f us per write+fdatasync" % o[0])
o=[]; ts=[threading.Thread(target=worker, args=(d+"/"+x, N, o)) for x in "bc"]
[t.start() for t in ts]; [t.join() for t in ts]; print("two files, two threads at once: %.0f, %.0f us per write+fdatasync" % tuple(o))
import shutil; shutil.rmtree(d)
