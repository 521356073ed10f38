package dev.limactl.cli;

import static com.tngtech.archunit.lang.syntax.ArchRuleDefinition.noClasses;
import static com.tngtech.archunit.library.Architectures.layeredArchitecture;
import static com.tngtech.archunit.library.dependencies.SlicesRuleDefinition.slices;

import com.tngtech.archunit.core.domain.JavaClasses;
import com.tngtech.archunit.core.importer.ClassFileImporter;
import com.tngtech.archunit.core.importer.ImportOption;
import com.tngtech.archunit.lang.ArchRule;
import org.junit.jupiter.api.Test;

/**
 * The boundaries of DESIGN.md, enforced on the production classes of all modules. The rules are
 * checked from plain JUnit 5 tests (the ArchUnit JUnit engine reports no test cases under Surefire here).
 */
class ArchitectureTest {
    static final JavaClasses CLASSES = new ClassFileImporter().withImportOption(ImportOption.Predefined.DO_NOT_INCLUDE_TESTS)
            .importPackages("dev.limactl");

    static final ArchRule layers = layeredArchitecture().consideringOnlyDependenciesInLayers()
            .layer("cli").definedBy("dev.limactl.cli..")
            .layer("apps").definedBy("dev.limactl.eval..", "dev.limactl.serve..", "dev.limactl.annotate..")
            .layer("run").definedBy("dev.limactl.train..", "dev.limactl.generate..", "dev.limactl.plan..")
            .layer("formats").definedBy("dev.limactl.tokenizer..", "dev.limactl.chat..", "dev.limactl.checkpoint..", "dev.limactl.config..")
            .layer("engine").definedBy("dev.limactl.engine..")
            .layer("curate").definedBy("dev.limactl.data.curate..")
            .layer("data").definedBy("dev.limactl.data")
            .whereLayer("cli").mayNotBeAccessedByAnyLayer()
            .whereLayer("apps").mayOnlyBeAccessedByLayers("cli")
            .whereLayer("run").mayOnlyBeAccessedByLayers("apps", "cli")
            .whereLayer("formats").mayOnlyBeAccessedByLayers("run", "apps", "cli")
            .whereLayer("engine").mayOnlyBeAccessedByLayers("formats", "run", "apps", "cli")
            .whereLayer("curate").mayOnlyBeAccessedByLayers("apps", "cli")
            .whereLayer("data").mayOnlyBeAccessedByLayers("curate", "formats", "run", "apps", "cli")
            .as("cli -> eval, serve -> train, generate -> tokenizer, chat, checkpoint, config -> engine; curation and the"
                    + " data layer below; nothing depends on cli");

    static final String[] LEAN = {"dev.limactl.engine..", "dev.limactl.tokenizer..", "dev.limactl.chat..", "dev.limactl.checkpoint..",
            "dev.limactl.config..", "dev.limactl.train..", "dev.limactl.generate..", "dev.limactl.plan..", "dev.limactl.data"};

    static final ArchRule leanEngine = noClasses().that().resideInAnyPackage(LEAN)
            .should().dependOnClassesThat().resideInAnyPackage("org.jfree..", "org.apache.commons.math3..", "com.sun.net.httpserver..",
                    "org.jsoup..", "org.apache.commons.csv..", "org.slf4j.simple..", "dev.limactl.eval..", "dev.limactl.serve..",
                    "dev.limactl.data.curate..", "dev.limactl.annotate..", "io.javalin..", "org.sqlite..")
            .as("the engine a service embeds (limactl-engine, limactl-arrow-data) needs no charts, HTTP server, judge,"
                    + " HTML/CSV libraries or logging binding");

    static final ArchRule javacppOnlyInTheBinding = noClasses().that().resideOutsideOfPackage("dev.limactl.engine.binding..")
            .should().dependOnClassesThat().resideInAPackage("org.bytedeco..")
            .as("only the binding class over lima.h touches JavaCPP");

    static final ArchRule jacksonOnlyInConfigAndIo = noClasses().that().resideInAnyPackage("dev.limactl.engine..", "dev.limactl.chat..")
            .should().dependOnClassesThat().resideInAPackage("com.fasterxml.jackson..")
            .as("Jackson stays in config and I/O code, out of the engine and chat format");

    static final ArchRule exitOnlyInCli = noClasses().that().resideOutsideOfPackage("dev.limactl.cli..")
            .should().callMethod(System.class, "exit", int.class)
            .as("only the CLI decides the process exit code");

    static final ArchRule noCycles = slices().matching("dev.limactl.(*)..").should().beFreeOfCycles()
            .as("packages form no dependency cycles");

    @Test
    void everyModuleIsImported() {
        for (String pkg : new String[] {"dev.limactl.cli", "dev.limactl.engine.binding", "dev.limactl.train", "dev.limactl.data",
                "dev.limactl.data.curate", "dev.limactl.eval", "dev.limactl.serve", "dev.limactl.checkpoint",
                "dev.limactl.annotate"}) {
            org.junit.jupiter.api.Assertions.assertTrue(CLASSES.stream().anyMatch(c -> c.getPackageName().equals(pkg)),
                    "no classes of " + pkg + " imported: the rules would pass vacuously");
        }
    }

    @Test
    void layersFollowTheDesign() {
        layers.check(CLASSES);
    }

    @Test
    void theEngineStaysLean() {
        leanEngine.check(CLASSES);
    }

    @Test
    void javacppStaysInTheBinding() {
        javacppOnlyInTheBinding.check(CLASSES);
    }

    @Test
    void jacksonStaysInConfigAndIo() {
        jacksonOnlyInConfigAndIo.check(CLASSES);
    }

    @Test
    void onlyTheCliExits() {
        exitOnlyInCli.check(CLASSES);
    }

    @Test
    void packagesHaveNoCycles() {
        noCycles.check(CLASSES);
    }
}
