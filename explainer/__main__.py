from explainer.cli import main

main(prog_name="circuits")
