from funnelcli.cli import main

main()
