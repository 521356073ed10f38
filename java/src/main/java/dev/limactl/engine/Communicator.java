package dev.limactl.engine;

import dev.limactl.engine.binding.LimaNative;
import dev.limactl.engine.binding.NcclIds;
import java.io.File;
import java.io.IOException;
import java.time.Duration;

/**
 * This process's place among the ranks of a data-parallel job (lima_comm): the collectives run by
 * liblima's communicator plugin, Gloo on CPUs. The plugin the jar carries is used when there is
 * one; without Gloo installed, joining fails with a message naming what to install, and nothing
 * else in the engine needs it.
 */
public final class Communicator implements AutoCloseable {
    private LimaNative.lima_comm handle;
    private final int rank, world;

    private Communicator(LimaNative.lima_comm handle, int rank, int world) {
        this.handle = handle;
        this.rank = rank;
        this.world = world;
    }

    /**
     * Joins the group as {@code rank} of {@code world}. rendezvous: "file:DIR", a directory every
     * rank can reach and no earlier job used, or "tcp://HOST:PORT/JOB", a key-value server (a
     * redis-server, see dev.limactl.train.RendezvousServer) every rank reaches; every rank must
     * arrive within the timeout, which also bounds each collective.
     */
    public static Communicator join(String backend, int rank, int world, String rendezvous, Duration timeout) {
        Lima.abiVersion();
        try {
            File bundled = LimaNative.bundledGlooPlugin();
            if (bundled != null && System.getenv("LIMA_GLOO_PLUGIN") == null) {
                Native.check(LimaNative.lima_comm_plugin_select(backend, bundled.getPath()));
            }
        } catch (IOException e) {
            throw new LimaException(LimaStatus.IO, "cannot extract the bundled Gloo plugin: " + e.getMessage());
        }
        LimaNative.lima_comm h = new LimaNative.lima_comm();
        Native.check(LimaNative.lima_comm_create(backend, rank, world, rendezvous, (int) Math.min(Integer.MAX_VALUE, timeout.toMillis()), h));
        return new Communicator(h, rank, world);
    }

    /**
     * The NCCL communicator of this CUDA rank on {@code device} ("cuda" or "cuda:N"), beside the
     * group's host communicator {@code host}: rank 0 makes the NCCL unique id with the JavaCPP NCCL
     * binding (else with the NCCL liblima's CUDA plugin opens) and sends it to every rank through
     * {@code host}, whose rendezvous every rank has already passed. A rank 0 that cannot make one
     * makes every rank fail with its reason.
     */
    public static Communicator joinNccl(Communicator host, String device, Duration timeout) {
        Lima.abiVersion();
        byte[] id = new byte[NcclIds.BYTES];
        String failure = null;
        if (host.rank() == 0) {
            String[] why = {""};
            byte[] made = NcclIds.create(why);
            if (made == null) {
                int st = LimaNative.lima_comm_nccl_unique_id(id, id.length);
                if (st != 0) failure = "cannot make an NCCL unique id: " + why[0] + "; liblima: " + LimaNative.lastError();
            } else {
                id = made;
            }
        }
        float[] msg = packId(id, failure != null);
        host.broadcast(msg, 0);
        if (msg[NcclIds.BYTES] != 0) {
            throw new LimaException(LimaStatus.UNSUPPORTED, failure != null ? failure
                    : "rank 0 could not make the NCCL unique id (its error is in its own log)");
        }
        id = unpackId(msg);
        LimaNative.lima_comm h = new LimaNative.lima_comm();
        Native.check(LimaNative.lima_comm_create_nccl(host.rank(), host.world(), id, id.length, device,
                (int) Math.min(Integer.MAX_VALUE, timeout.toMillis()), h));
        return new Communicator(h, host.rank(), host.world());
    }

    /** The id's bytes as exact float values (0-255) and a failure flag: what a float broadcast carries. */
    static float[] packId(byte[] id, boolean failed) {
        float[] f = new float[id.length + 1];
        for (int i = 0; i < id.length; i++) f[i] = id[i] & 0xFF;
        f[id.length] = failed ? 1 : 0;
        return f;
    }

    static byte[] unpackId(float[] f) {
        byte[] id = new byte[f.length - 1];
        for (int i = 0; i < id.length; i++) id[i] = (byte) (int) f[i];
        return id;
    }

    public int rank() {
        return rank;
    }

    public int world() {
        return world;
    }

    /** data = the sum over ranks of data, in place. */
    public void allreduceSum(float[] data) {
        Native.check(LimaNative.lima_comm_allreduce_sum(live(), data, data.length));
    }

    /** Every rank's {@code in}, in rank order. */
    public float[] allgather(float[] in) {
        float[] out = new float[in.length * world];
        Native.check(LimaNative.lima_comm_allgather(live(), in, in.length, out));
        return out;
    }

    /** data = root's data. */
    public void broadcast(float[] data, int root) {
        Native.check(LimaNative.lima_comm_broadcast(live(), data, data.length, root));
    }

    public void barrier() {
        Native.check(LimaNative.lima_comm_barrier(live()));
    }

    /** Closes this rank's connections so that peers blocked in a collective with it fail at once. */
    public void abort() {
        if (handle != null) LimaNative.lima_comm_abort(handle);
    }

    LimaNative.lima_comm live() {
        if (handle == null) throw new IllegalStateException("communicator is closed");
        return handle;
    }

    @Override
    public void close() {
        if (handle != null) {
            LimaNative.lima_comm_free(handle);
            handle = null;
        }
    }
}
