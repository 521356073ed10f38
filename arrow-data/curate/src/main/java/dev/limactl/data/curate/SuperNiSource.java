package dev.limactl.data.curate;

import com.fasterxml.jackson.core.json.JsonReadFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.json.JsonMapper;
import dev.limactl.data.DataFormatException;
import dev.limactl.data.Example;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;

/**
 * Super-Natural Instructions task files (allenai/natural-instructions {@code tasks/*.json}). The
 * real files hold bare {@code NaN} values, so the reader accepts non-numeric numbers.
 */
public final class SuperNiSource {
    public record Task(String name, List<String> categories, String definition, List<Instance> instances) {}

    public record Instance(String id, String input, String output) {}

    private static final JsonMapper JSON = JsonMapper.builder().enable(JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS).build();

    private SuperNiSource() {}

    public static List<Task> read(Path dir) {
        List<Path> files;
        try (Stream<Path> s = Files.list(dir)) {
            files = s.filter(p -> p.getFileName().toString().endsWith(".json")).sorted().toList();
        } catch (IOException e) {
            throw new DataFormatException("Super-NI task folder " + dir + " cannot be listed: " + e.getMessage(), e);
        }
        List<Task> out = new ArrayList<>();
        for (Path f : files) {
            JsonNode n;
            try {
                n = JSON.readTree(f.toFile());
            } catch (IOException e) {
                throw new DataFormatException(f + ": not valid JSON: " + DataFormatException.reason(e), e);
            }
            String name = f.getFileName().toString().replaceFirst("\\.json$", "");
            List<String> cats = new ArrayList<>();
            n.path("Categories").forEach(c -> cats.add(c.asText()));
            String def = n.path("Definition").path(0).asText("").strip();
            if (def.isEmpty()) throw new DataFormatException(f + ": task has no Definition");
            List<Instance> inst = new ArrayList<>();
            for (JsonNode i : n.path("Instances")) {
                JsonNode o = i.path("output").path(0);
                if (!o.isTextual() || o.asText().isBlank()) continue;  // NaN or empty outputs are not responses
                inst.add(new Instance(i.path("id").asText(), i.path("input").asText("").strip(), o.asText().strip()));
            }
            out.add(new Task(name, cats, def, inst));
        }
        return out;
    }

    /** The examples of a super-ni block: one random instance of each of `count` random tasks. */
    static List<Example> sample(Recipe.SuperNi s, Recipe.Context ctx, Random rnd) {
        List<Task> tasks = new ArrayList<>(read(ctx.path(s.path())));
        if (s.categories() != null) {
            tasks.removeIf(t -> t.categories().stream().noneMatch(c -> s.categories().stream().anyMatch(c::equalsIgnoreCase)));
        }
        tasks.removeIf(t -> t.instances().isEmpty());
        Collections.shuffle(tasks, rnd);
        List<Example> out = new ArrayList<>();
        for (Task t : tasks.subList(0, Math.min(tasks.size(), s.count()))) {
            Instance in = t.instances().get(rnd.nextInt(t.instances().size()));
            Map<String, String> prov = new LinkedHashMap<>();
            prov.put("task", t.name());
            prov.put("instance_id", in.id());
            prov.put("categories", String.join(",", t.categories()));
            prov.put("license", "Apache-2.0");
            out.add(Example.of("superni-" + in.id(), "super-ni", s.split(), t.definition() + "\n\n" + in.input(), in.output(), prov));
        }
        return out;
    }
}
