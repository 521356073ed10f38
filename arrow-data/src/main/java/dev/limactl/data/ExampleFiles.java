package dev.limactl.data;

import java.nio.file.Path;
import java.util.List;

/** Reads an example file by its extension: {@code .arrow} (Arrow IPC) or {@code .jsonl}. */
public final class ExampleFiles {
    private ExampleFiles() {}

    public static List<Example> read(Path path, String defaultSplit) {
        String name = path.getFileName().toString();
        if (name.endsWith(".arrow")) return ArrowExamples.read(path);
        if (name.endsWith(".jsonl")) return JsonlExamples.read(path, defaultSplit);
        throw new DataFormatException(path + ": unknown data file type (expected .arrow or .jsonl)");
    }
}
